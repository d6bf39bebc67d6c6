"""The run's own settings (HTTP, store, dry run, snapshots), frozen once at start.

Each field is the top-level setting of the same name; a setting the config leaves unset (or
null) takes the schema's default, read back from `config_schema`, the one place it is stated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Self

from target_tiktok_audiences.settings.schema import setting
from target_tiktok_audiences.tiktok.http import ClientOptions


def _optional_text(value: Any) -> str | None:
    return None if value is None else str(value)


def _texts(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value or ())


# How a field's value is read from the config, by the field's annotation.
_READERS: dict[str, Callable[[Any], Any]] = {
    "str": str,
    "str | None": _optional_text,
    "int": int,
    "float": float,
    "bool": bool,
    "tuple[str, ...]": _texts,
}


@dataclass(frozen=True)
class RunSettings:
    """Every top-level setting that the run itself uses, besides the audience definitions."""

    api_url: str
    access_token: str | None
    advertiser_ids: tuple[str, ...]
    batch_size: int
    request_timeout: float
    max_retries: int
    max_requests_per_second: float
    max_parallel_requests: int
    retry_backoff_seconds: float
    dry_run: bool
    dry_run_output: str
    membership_store: str
    store_timeout: float
    store_lock_timeout: float
    history_days: int
    snapshot_end: str
    allow_key_change: bool
    rebuild_when_store_empty: bool

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Self:
        """The settings of `config` (validated by the schema), defaults filled in."""
        return cls(**{f.name: _READERS[str(f.type)](setting(config, f.name)) for f in fields(cls)})

    def client_options(self) -> ClientOptions:
        """How the TikTok client times out, retries, paces and batches."""
        return ClientOptions(
            timeout=self.request_timeout,
            max_retries=self.max_retries,
            max_requests_per_second=self.max_requests_per_second,
            max_parallel_requests=self.max_parallel_requests,
            batch_size=self.batch_size,
            backoff_base=self.retry_backoff_seconds,
        )

    @property
    def end_of_input_proves_snapshot(self) -> bool:
        """Whether the end of the input closes an open snapshot (`snapshot_end`)."""
        return self.snapshot_end == "end_of_input"
