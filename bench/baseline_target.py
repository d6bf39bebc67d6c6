"""The baseline: the singer-sdk target a newcomer would write for the same job.

A `Target` with one `BatchSink`, every SDK default left alone (record validation on, timestamp
parsing, default batch size); only `process_batch` is written. It normalises and hashes the same
fields with the package's `IdentifierExtractor`, keeps the hashes in a list, then drops them.

    python bench/baseline_target.py --config CONFIG.json < input.singer
"""

from __future__ import annotations

from singer_sdk import typing as th
from singer_sdk.sinks import BatchSink
from singer_sdk.target_base import Target

from target_tiktok_audiences.identifiers import (
    DEFAULT_IDENTIFIER_FIELDS,
    IdentifierExtractor,
    NormalizationOptions,
)


class BaselineSink(BatchSink):
    """Hashes each batch's identifiers and throws the hashes away."""

    def process_batch(self, context: dict) -> None:
        """Normalise and hash every record of the batch; keep the hashes, then drop them."""
        extract = IdentifierExtractor(
            DEFAULT_IDENTIFIER_FIELDS,
            NormalizationOptions(self.config.get("phone_default_region", "US")),
        )
        hashes = [extract(record) for record in context.get("records", [])]
        self.logger.debug("Hashed %d records", len(hashes))
        del hashes


class BaselineTarget(Target):
    """A plain singer-sdk target with default settings."""

    name = "baseline-target"
    config_jsonschema = th.PropertiesList(
        th.Property("phone_default_region", th.StringType, default="US"),
    ).to_dict()
    default_sink_class = BaselineSink


if __name__ == "__main__":
    BaselineTarget.cli()
