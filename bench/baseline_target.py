"""The baseline: the singer-sdk target a newcomer would write for the same job.

A `Target` with one `BatchSink`, every SDK default left alone (record validation on, timestamp
parsing, default batch size); only `process_batch` is written. It normalises inline, the way the
libraries' own documentation shows: `strip().lower()` for emails and device ids,
`phonenumbers.parse` and `format_number(..., E164)` for phones, `hashlib.sha256` for all. It
borrows nothing from target_tiktok_audiences. On the bench's data (every value valid) it yields
the same hashes as the target; bench.py checks that on a sample before it times anything.

    python bench/baseline_target.py --config CONFIG.json < input.singer
"""

from __future__ import annotations

import hashlib
from typing import Any

import phonenumbers
from singer_sdk import typing as th
from singer_sdk.sinks import BatchSink
from singer_sdk.target_base import Target


def sha256(value: str) -> str:
    """Lowercase hex SHA-256 of the UTF-8 text."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def hash_person(record: dict[str, Any], region: str) -> dict[str, str]:
    """TikTok `id_schema` -> hex SHA-256 of each identifier the record has and that parses."""
    hashes: dict[str, str] = {}
    email = record.get("email")
    if email:
        hashes["EMAIL_SHA256"] = sha256(email.strip().lower())
    phone = record.get("phone")
    if phone:
        try:
            number = phonenumbers.parse(phone, region)
        except phonenumbers.NumberParseException:
            pass
        else:
            e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
            hashes["PHONE_SHA256"] = sha256(e164)
    idfa = record.get("idfa")
    if idfa:
        hashes["IDFA_SHA256"] = sha256(idfa.strip().lower())
    aaid = record.get("aaid")
    if aaid:
        hashes["AAID_SHA256"] = sha256(aaid.strip().lower())
    return hashes


class BaselineSink(BatchSink):
    """Hashes each batch's identifiers and throws the hashes away."""

    def process_batch(self, context: dict) -> None:
        """Normalise and hash every record of the batch; keep the hashes, then drop them."""
        region = self.config["phone_default_region"]
        hashes = [hash_person(record, region) for record in context.get("records", [])]
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
