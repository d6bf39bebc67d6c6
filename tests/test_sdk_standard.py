"""The singer-sdk standard target tests that make sense for an API target, in dry-run mode."""

from __future__ import annotations

import tempfile
from pathlib import Path

from singer_sdk.testing import get_target_test_class

from target_tiktok_audiences.target import TargetTikTokAudiences

_WORKDIR = Path(tempfile.mkdtemp(prefix="tiktok-audiences-sdk-tests-"))

TestTargetTikTokAudiences = get_target_test_class(
    TargetTikTokAudiences,
    config={
        "advertiser_ids": ["7000000000000000001"],
        "dry_run": True,
        "dry_run_output": str(_WORKDIR / "dry-run.jsonl"),
        "membership_store": str(_WORKDIR / "store.sqlite"),
        "min_audience_size": 0,
    },
)
