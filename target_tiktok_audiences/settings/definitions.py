"""Audiences as definitions: which streams feed each audience, and how each stream is read.

`resolve_definitions` turns the config into frozen values, refusing at start (one line naming
the cause and the fix) everything a schema cannot express. The sync works from these and never
reads raw config:

- a `SourceDefinition` per stream: how its records are read (in the simple form from the
  audience spec keyed by the stream, otherwise from `sources.<stream>`, else the top level);
- an `AudienceDefinition` per audience spec: its included and excluded streams, filters,
  fan-out, sharing and lookalike.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from target_tiktok_audiences.errors import ConfigError
from target_tiktok_audiences.identifiers import NormalizationOptions
from target_tiktok_audiences.settings.resolve import (
    TikTokAudienceIdentity,
    check_advertisers,
    check_top_level,
    duplicate_audience_error,
    identifier_fields,
    overridden,
    refuse_duplicates,
    tiktok_audience_name,
)
from target_tiktok_audiences.settings.schema import (
    LOOKALIKE_SPEC,
    SOURCE_KEYS,
    property_default,
    setting,
)

SPLIT_PLACEHOLDER = "{value}"
MAX_LOOKALIKE_NAME = 128  # TikTok's limit for `custom_audience_name` of a lookalike
_SCALARS = (str, int, float, bool)


@dataclass(frozen=True)
class SourceDefinition:
    """How one stream is read: the same for every audience it feeds or excludes from."""

    stream: str
    identifier_fields: Mapping[str, str | None]  # merged with the default; null: not read
    sync_mode: str
    membership_field: str | None
    consent_field: str | None
    normalization: NormalizationOptions


@dataclass(frozen=True)
class Lookalike:
    """A lookalike of an audience, as `dmp/custom_audience/lookalike/create/` takes it."""

    audience_name: str
    location_ids: tuple[str, ...]  # at least one
    audience_size: str
    mobile_os: str
    placements: tuple[str, ...]  # at least one
    include_source: bool


@dataclass(frozen=True)
class AudienceDefinition(TikTokAudienceIdentity):
    """One audience spec, resolved; under `split_by`, one audience per value at run time.

    Invariants: `streams` is not empty and shares no stream with `exclude_streams`; under
    `split_by`, `audience_name` holds `{value}` and `audience_id` is None; otherwise exactly
    one of `audience_id` and `audience_name` is set, the name already cut as TikTok cuts it.
    """

    key: str
    streams: tuple[str, ...]
    exclude_streams: tuple[str, ...]  # the spec's, then the top level's, each once
    where: tuple[tuple[str, tuple[Any, ...]], ...]  # (dotted path, allowed values), by path
    split_by: str | None
    audience_id: str | None
    audience_name: str | None
    advertiser_ids: tuple[str, ...]
    min_audience_size: int
    max_removal_fraction: float
    share_with_advertiser_ids: tuple[str, ...]
    lookalike: Lookalike | None
    simple: bool  # no `streams`: the key is the one stream, read as this spec says

    def name_for(self, value: Any) -> str:
        """The TikTok name of the audience of one `split_by` value (a JSON scalar)."""
        if self.split_by is None or self.audience_name is None:
            msg = f"audience {self.key!r} has no `split_by`: it has one name"
            raise ValueError(msg)
        name = self.audience_name.replace(SPLIT_PLACEHOLDER, split_text(value))
        return tiktok_audience_name(name)


def split_text(value: Any) -> str:
    """A `split_by` value's string form: a string as it is, other scalars as JSON writes them.

    Numbers as the reader keeps them (long ones as Decimal) are written as they were read.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value) if isinstance(value, (int, float)) else str(value)


@dataclass(frozen=True)
class Definitions:
    """Every audience and how each stream is read, for one run.

    With `audiences` listed, `audiences` is fixed at start and a stream no spec includes or
    excludes is not read. With `audiences` empty (the implicit form), every stream but the
    top-level exclusion streams feeds an audience named after it, made on first use: then
    `audiences` holds those seen so far, and two streams of one TikTok audience are refused
    when the second one shows up.
    """

    audiences: Mapping[str, AudienceDefinition]
    _resolver: Resolver = field(repr=False, compare=False)
    # `audiences` itself, which the implicit form fills as streams show up.
    _made: dict[str, AudienceDefinition] = field(repr=False, compare=False)
    _sources: dict[str, SourceDefinition] = field(default_factory=dict, repr=False, compare=False)

    def source(self, stream: str) -> SourceDefinition:
        """How `stream` is read."""
        if stream not in self._sources:
            self._sources[stream] = self._resolver.source(stream)
        return self._sources[stream]

    def audiences_of(self, stream: str) -> list[AudienceDefinition]:
        """The audiences that `stream` feeds or excludes people from, in config order."""
        if self._resolver.implicit and stream not in self._resolver.exclude_streams:
            self._implicit_audience(stream)
        return [a for a in self.audiences.values() if stream in (*a.streams, *a.exclude_streams)]

    def is_read(self, stream: str) -> bool:
        """Whether the run reads `stream`: it feeds an audience or excludes people from one."""
        return self._resolver.implicit or bool(self.audiences_of(stream))

    def _implicit_audience(self, stream: str) -> None:
        if stream in self._made:
            return
        made = self._resolver.audience(stream, {})
        for other in self._made.values():
            if other.tiktok_audience == made.tiktok_audience:
                raise duplicate_audience_error(f"stream {other.key!r}", f"stream {stream!r}", made)
        self._made[stream] = made


def resolve_definitions(config: Mapping[str, Any]) -> Definitions:
    """Every audience and source of `config`; every refusal is raised here, before any input."""
    resolver = Resolver(config, check_top_level(config))
    specs: Mapping[str, Any] = config.get("audiences") or {}
    audiences = {key: resolver.audience(key, spec or {}) for key, spec in specs.items()}
    refuse_duplicates(audiences.items())
    definitions = Definitions(audiences=audiences, _resolver=resolver, _made=audiences)
    for stream in resolver.sources:
        _check_source_is_used(stream, definitions)
        definitions.source(stream)
    for audience in audiences.values():
        if audience.simple:
            definitions.source(audience.key)
    return definitions


def _check_source_is_used(stream: str, definitions: Definitions) -> None:
    owner = definitions.audiences.get(stream)
    if owner is not None and owner.simple:
        msg = (
            f"`sources.{stream}` and `audiences.{stream}` both say how stream {stream!r} is "
            f"read, and the spec (simple form: no `streams`) reads it: move the settings into "
            f"`audiences.{stream}`, or give that spec `streams`"
        )
        raise ConfigError(msg)
    if not definitions.is_read(stream):
        msg = (
            f"`sources.{stream}` is for stream {stream!r}, which no audience reads or excludes: "
            "name it in an audience's `streams` or `exclude_streams`, or remove it"
        )
        raise ConfigError(msg)


class Resolver:
    """Turns one config's specs into definitions; kept for streams the implicit form meets later.

    `audience` and `source` raise a ConfigError naming the setting on any spec they refuse.
    """

    def __init__(self, config: Mapping[str, Any], normalization: NormalizationOptions) -> None:
        self.config = config
        self.normalization = normalization
        self.implicit = not config.get("audiences")
        self.sources: Mapping[str, Any] = setting(config, "sources")
        self.exclude_streams = _stream_list(setting(config, "exclude_streams"))

    def source(self, stream: str) -> SourceDefinition:
        """How `stream` is read: as its simple-form spec says, else `sources.<stream>`, else top."""
        spec = (self.config.get("audiences") or {}).get(stream)
        if spec is not None and spec.get("streams") is None:
            return self._source(stream, spec, f"audiences.{stream}")
        if stream in self.sources:
            return self._source(stream, self.sources[stream] or {}, f"sources.{stream}")
        return self._source(stream, {}, "")

    def _source(self, stream: str, spec: Mapping[str, Any], where: str) -> SourceDefinition:
        given = "identifier_fields" in spec
        fields = identifier_fields(
            spec["identifier_fields"] if given else self.config.get("identifier_fields"),
            f"{where}.identifier_fields" if given else "identifier_fields",
        )
        return SourceDefinition(
            stream=stream,
            identifier_fields=MappingProxyType(fields),
            sync_mode=spec.get("sync_mode") or setting(self.config, "sync_mode"),
            membership_field=spec.get("membership_field", self.config.get("membership_field")),
            consent_field=spec.get("consent_field", self.config.get("consent_field")),
            normalization=self.normalization,
        )

    def audience(self, key: str, spec: Mapping[str, Any]) -> AudienceDefinition:
        """The audience of the spec `audiences.<key>` (`{}` for the implicit form's streams)."""
        where = f"audiences.{key}" if not self.implicit else "audiences"
        simple = spec.get("streams") is None
        if simple:
            streams: tuple[str, ...] = (key,)
        else:
            streams = _stream_list(spec["streams"])
            if not streams:
                msg = (
                    f"`{where}.streams` is empty: list the streams whose people are members, "
                    f"or drop `streams` to have stream {key!r} feed it"
                )
                raise ConfigError(msg)
            reading = [name for name in SOURCE_KEYS if spec.get(name) is not None]
            if reading:
                msg = (
                    f"`{where}` has `streams` and sets `{reading[0]}`: how a stream is read "
                    "belongs to the stream; set it in `sources` (`sources.<stream>` for each "
                    "of its streams), or at the top level"
                )
                raise ConfigError(msg)
        excluded = _stream_list(spec.get("exclude_streams") or [])
        excluded = tuple(dict.fromkeys((*excluded, *self.exclude_streams)))
        both = [s for s in streams if s in excluded]
        if both:
            msg = (
                f"`{where}` both includes and excludes stream {both[0]!r}: remove it from "
                "`streams` or from `exclude_streams`"
            )
            raise ConfigError(msg)
        audience_id, audience_name, split_by = _identity(key, spec, where)
        advertisers_given = "advertiser_ids" in spec
        return AudienceDefinition(
            key=key,
            streams=streams,
            exclude_streams=excluded,
            where=_where(spec.get("where") or {}, f"{where}.where"),
            split_by=split_by,
            audience_id=audience_id,
            audience_name=audience_name,
            advertiser_ids=check_advertisers(
                spec["advertiser_ids"] if advertisers_given else self.config.get("advertiser_ids"),
                f"{where}.advertiser_ids" if advertisers_given else "advertiser_ids",
            ),
            min_audience_size=int(overridden(spec, self.config, "min_audience_size")),
            max_removal_fraction=float(overridden(spec, self.config, "max_removal_fraction")),
            share_with_advertiser_ids=tuple(
                dict.fromkeys(
                    check_advertisers(
                        spec.get("share_with_advertiser_ids") or [],
                        f"{where}.share_with_advertiser_ids",
                        may_be_empty=True,
                    )
                )
            ),
            lookalike=_lookalike(spec["lookalike"], f"{where}.lookalike")
            if spec.get("lookalike") is not None
            else None,
            simple=simple,
        )


def _identity(
    key: str, spec: Mapping[str, Any], where: str
) -> tuple[str | None, str | None, str | None]:
    """(`audience_id`, `audience_name`, `split_by`) of a spec, with their rules checked."""
    audience_id = spec.get("audience_id")
    audience_name = spec.get("audience_name")
    split_by = spec.get("split_by")
    if audience_id and audience_name:
        msg = f"`{where}` sets both audience_id and audience_name: keep one."
        raise ConfigError(msg)
    if split_by is None:
        if audience_id:
            return str(audience_id), None, None
        return None, tiktok_audience_name(audience_name or key), None
    if audience_id:
        msg = (
            f"`{where}` sets `split_by` and `audience_id`: one audience per value must be "
            'created by name; use `audience_name` with `{value}` (e.g. "Buyers {value}")'
        )
        raise ConfigError(msg)
    if not audience_name or SPLIT_PLACEHOLDER not in audience_name:
        msg = (
            f"`{where}` sets `split_by` but its `audience_name` "
            f"{'is not set' if not audience_name else 'lacks {value}'}: give a name with "
            '`{value}`, replaced by each value (e.g. "Buyers {value}")'
        )
        raise ConfigError(msg)
    return None, audience_name, split_by


def _stream_list(value: list[str]) -> tuple[str, ...]:
    """Stream names (the schema made them an array of strings), each once, in the order given."""
    return tuple(dict.fromkeys(value))


def _where(value: Mapping[str, Any], where: str) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    """`where` (an object, by the schema) as (path, allowed values) pairs sorted by path.

    Each allowed value is a JSON scalar or null.
    """
    pairs = []
    for path, allowed in value.items():
        values = tuple(allowed) if isinstance(allowed, list) else (allowed,)
        if not values:
            msg = f"`{where}.{path}` is an empty array: no record could match; list its values"
            raise ConfigError(msg)
        for one in values:
            if one is not None and not isinstance(one, _SCALARS):
                msg = (
                    f"`{where}.{path}` holds {type(one).__name__} {json.dumps(one)}: give a "
                    "string, number, boolean or null, or an array of them"
                )
                raise ConfigError(msg)
        pairs.append((str(path), values))
    return tuple(sorted(pairs, key=lambda pair: pair[0]))


def _lookalike(spec: Any, where: str) -> Lookalike:
    """A `lookalike` object, its defaults from the schema; name and locations required."""
    name = spec.get("audience_name")
    if not name:
        msg = f"`{where}.audience_name` is not set: name the lookalike audience"
        raise ConfigError(msg)
    if len(name) > MAX_LOOKALIKE_NAME:
        msg = (
            f"`{where}.audience_name` is {len(name)} characters, over TikTok's "
            f"{MAX_LOOKALIKE_NAME}: shorten it"
        )
        raise ConfigError(msg)
    locations = spec.get("location_ids")
    if not locations:
        msg = (
            f"`{where}.location_ids` is {'empty' if locations == [] else 'not set'}: list the "
            "TikTok location ids the lookalike is drawn from"
        )
        raise ConfigError(msg)
    placements = _given(spec, "placements")
    if not placements:
        msg = f'`{where}.placements` is empty: list at least one (e.g. "TikTok")'
        raise ConfigError(msg)
    return Lookalike(
        audience_name=name,
        location_ids=tuple(dict.fromkeys(str(x) for x in locations)),
        audience_size=_given(spec, "audience_size"),
        mobile_os=_given(spec, "mobile_os"),
        placements=tuple(dict.fromkeys(placements)),
        include_source=bool(_given(spec, "include_source")),
    )


def _given(spec: Mapping[str, Any], name: str) -> Any:
    value = spec.get(name)
    return property_default(LOOKALIKE_SPEC.to_dict(), name) if value is None else value
