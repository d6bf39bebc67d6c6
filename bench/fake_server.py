"""tests/fake_tiktok.py as a script, unchanged, plus the arrival time of every mapping request.

    python bench/fake_server.py --port 0 --latency 0.2 --rate-limit 10 --rate-limit-kind bucket ...

The fake's own summary (printed to stderr on SIGTERM) has only totals; this adds a "mapping" list
of [arrival time, answer code] per segment/mapping/ request, so the bench can measure the sending
window and the busiest 1-second window exactly. BENCH_FAKE_TIKTOK names the fake_tiktok.py to
load (default: the checkout's tests/fake_tiktok.py).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

_PATH = Path(
    os.environ.get("BENCH_FAKE_TIKTOK")
    or Path(__file__).resolve().parents[1] / "tests" / "fake_tiktok.py"
)
_SPEC = importlib.util.spec_from_file_location("fake_tiktok", _PATH)
assert _SPEC is not None and _SPEC.loader is not None
fake_tiktok = importlib.util.module_from_spec(_SPEC)
sys.modules["fake_tiktok"] = fake_tiktok
_SPEC.loader.exec_module(fake_tiktok)

_summary = fake_tiktok.FakeTikTok.summary


def summary(self: Any) -> dict[str, Any]:
    """The fake's summary plus [time, code] of every mapping request, in arrival order."""
    out = _summary(self)
    log = self.requests_log("segment/mapping/", bodies=False)
    out["mapping"] = [[entry["time"], entry["code"]] for entry in log]
    return out


fake_tiktok.FakeTikTok.summary = summary

if __name__ == "__main__":
    sys.exit(fake_tiktok.main())
