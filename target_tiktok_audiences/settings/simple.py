"""The simple form's per-stream settings, as today's sink reads them: one stream, one audience.

`AudienceSettings` joins a stream's `SourceDefinition` and `AudienceDefinition` (both made by
`definitions.Resolver`) into the one value the sink takes; the sync of composed audiences works
from `Definitions` instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from target_tiktok_audiences.identifiers import NormalizationOptions
from target_tiktok_audiences.settings.definitions import (
    AudienceDefinition,
    SourceDefinition,
)
from target_tiktok_audiences.settings.resolve import (
    TikTokAudienceIdentity,
    normalization_options,
)


@dataclass(frozen=True)
class AudienceSettings(TikTokAudienceIdentity):
    """Everything one stream's sync needs to know, resolved from the top level and its spec.

    A composed audience's sync reads no records: its `normalization` is the settings' default.
    """

    stream: str
    audience_id: str | None
    audience_name: str | None
    advertiser_ids: tuple[str, ...]
    identifier_fields: Mapping[str, str | None]
    sync_mode: str
    membership_field: str | None
    consent_field: str | None
    min_audience_size: int
    max_removal_fraction: float
    normalization: NormalizationOptions = field(default_factory=lambda: normalization_options({}))


def simple_settings(audience: AudienceDefinition, source: SourceDefinition) -> AudienceSettings:
    """A simple audience's settings: its definition, read as its stream is."""
    return AudienceSettings(
        stream=source.stream,
        audience_id=audience.audience_id,
        audience_name=audience.audience_name,
        advertiser_ids=audience.advertiser_ids,
        identifier_fields=source.identifier_fields,
        sync_mode=source.sync_mode,
        membership_field=source.membership_field,
        consent_field=source.consent_field,
        min_audience_size=audience.min_audience_size,
        max_removal_fraction=audience.max_removal_fraction,
        normalization=source.normalization,
    )
