"""The tiktok/ package speaks TikTok only: it never loads the store, the settings or the sync."""

from __future__ import annotations

import subprocess
import sys

OUTSIDE = ("store", "settings", "sinks", "target", "cli", "people", "audiences", "planning")


def test_the_tiktok_package_loads_nothing_of_the_store_or_the_settings():
    code = (
        "import sys, target_tiktok_audiences.tiktok.dry_run; "
        "print(' '.join(m for m in sys.modules if m.startswith('target_tiktok_audiences.')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert "target_tiktok_audiences.tiktok.http" in loaded
    outside = [
        m for m in loaded if m.removeprefix("target_tiktok_audiences.").split(".")[0] in OUTSIDE
    ]
    assert outside == []
