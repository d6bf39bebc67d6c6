"""The Meltano way: this repository's meltano.yml, Meltano and tap-jsonl from PyPI, a fake TikTok.

The slow test builds a real Meltano project in a temp dir (its own venv with Meltano, the loader
installed editable from this checkout, the sample tap from PyPI), runs `meltano run` twice and
checks that the audience ends up right and that the second run resumes from the state Meltano
stored without sending anything. It needs PyPI and takes a few minutes; the fast tests check
meltano.yml against the target's settings schema so the two cannot drift apart.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ADVERTISER, TOKEN, sha
from tests.fake_tiktok import FakeTikTok

REPO = Path(__file__).resolve().parents[1]
MELTANO = "meltano>=4,<5"
LOADER = "target-tiktok-audiences"


def project_file() -> dict[str, Any]:
    return yaml.safe_load((REPO / "meltano.yml").read_text())


def plugin(kind: str, name: str) -> dict[str, Any]:
    [found] = [p for p in project_file()["plugins"][kind] if p["name"] == name]
    return found


# Fast: meltano.yml agrees with the code


def test_loader_commands_and_sample_pipeline_config():
    loader = plugin("loaders", LOADER)
    assert {name: c["executable"] for name, c in loader["commands"].items()} == {
        "check": "tiktok-audiences",
        "status": "tiktok-audiences",
    }
    assert loader["commands"]["check"]["args"].split()[0] == "check"
    assert loader["commands"]["status"]["args"].split()[0] == "status"
    config = loader["config"]
    assert config["dry_run"] is True
    assert config["consent_field"] == "marketing_consent"
    assert config["membership_store"].endswith(".tiktok-audiences/membership.sqlite")
    tap = plugin("extractors", "tap-jsonl")
    assert tap["config"]["path"].endswith("examples/contacts.jsonl")
    assert tap["config"]["stream_name"] in config["audiences"]
    assert tap["config"]["primary_keys"] == ["id"]
    consenting = [
        json.loads(line)
        for line in (REPO / "examples/contacts.jsonl").read_text().splitlines()
        if json.loads(line)["marketing_consent"]
    ]
    assert len(consenting) >= config["min_audience_size"], "the sample run must not be held"


def test_gitignore_keeps_secrets_stores_and_dry_run_output_out_of_git():
    """`.env` is where `meltano config set` puts the token; stores and dry runs are local."""
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = [
        ".env",
        ".tiktok-audiences/membership.sqlite",
        "membership.sqlite",
        "stores/audiences.sqlite",
        "tiktok-audiences-dry-run.jsonl",
        "plans/contacts-dry-run.jsonl",
        "dry-run-2026.jsonl",
    ]
    proc = subprocess.run(
        ["git", "-C", str(REPO), "check-ignore", "--no-index", *ignored],
        capture_output=True,
        text=True,
        check=False,
    )
    assert sorted(proc.stdout.split()) == sorted(ignored)
    kept = ["examples/contacts.jsonl", "meltano.yml", "target_tiktok_audiences/store.py"]
    proc = subprocess.run(
        ["git", "-C", str(REPO), "check-ignore", "--no-index", *kept],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.stdout == ""


# Slow: a real Meltano project


def contacts(ids: range) -> list[dict[str, Any]]:
    """Example-like contacts; every third one has not consented."""
    return [
        {
            "id": i,
            "first_name": f"Person{i}",
            "email": f"  Person.{i}@Example.COM ",
            "phone": f"+1 415 555 {i:04d}" if i % 2 else None,
            "marketing_consent": i % 3 != 0,
            "updated_at": "2026-11-01T00:00:00Z",
        }
        for i in ids
    ]


def expected_members(rows: list[dict[str, Any]]) -> dict[str, set[str]]:
    members: dict[str, set[str]] = {"EMAIL_SHA256": set(), "PHONE_SHA256": set()}
    for row in rows:
        if row["marketing_consent"]:
            members["EMAIL_SHA256"].add(sha(row["email"].strip().lower()))
            if row["phone"]:
                members["PHONE_SHA256"].add(sha("+1415555" + f"{row['id']:04d}"))
    return members


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # tap-jsonl bookmarks the file's mtime: make each rewrite visibly newer.
    stamp = time.time() + len(rows)
    os.utime(path, (stamp, stamp))


@pytest.fixture(scope="module")
def meltano(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Meltano from PyPI in a venv of its own, as a user would install it."""
    venv = tmp_path_factory.mktemp("meltano-venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", MELTANO],
        check=True,
        timeout=400,
    )
    return venv / "bin" / "meltano"


class Project:
    """A Meltano project made from this repository's meltano.yml."""

    def __init__(self, root: Path, meltano: Path, env: dict[str, str]) -> None:
        self.root = root
        self.meltano = meltano
        self.env = env

    def __call__(
        self, *args: str, timeout: float = 180, ok: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(self.meltano), *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert TOKEN not in proc.stdout + proc.stderr, "the token must never be printed"
        assert (proc.returncode == 0) is ok, (
            f"meltano {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
        )
        return proc


def test_meltano_run_syncs_and_resumes_from_stored_state(tmp_path, meltano):
    started = time.monotonic()
    root = tmp_path / "project"
    root.mkdir()
    text = (REPO / "meltano.yml").read_text()
    assert text.count("pip_url: -e .\n") == 1
    (root / "meltano.yml").write_text(text.replace("pip_url: -e .\n", f"pip_url: -e {REPO}\n"))
    data = root / "contacts.jsonl"
    rows = contacts(range(1, 31))
    write_jsonl(data, rows)

    fake = FakeTikTok().start()
    try:
        fake.add_advertiser(ADVERTISER, name="Main account")
        fake.add_token(TOKEN, [ADVERTISER])
        inherited = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("TARGET_TIKTOK_AUDIENCES_", "TAP_JSONL_", "MELTANO_"))
            and k not in ("VIRTUAL_ENV", "PYTHONPATH")
        }
        env = {
            **inherited,
            "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
            "TAP_JSONL_PATH": str(data),
            "TARGET_TIKTOK_AUDIENCES_ACCESS_TOKEN": TOKEN,
            "TARGET_TIKTOK_AUDIENCES_API_URL": fake.url,
            "TARGET_TIKTOK_AUDIENCES_ADVERTISER_IDS": json.dumps([ADVERTISER]),
            "TARGET_TIKTOK_AUDIENCES_DRY_RUN": "false",
            "TARGET_TIKTOK_AUDIENCES_MIN_AUDIENCE_SIZE": "0",
            # A number setting from the environment, which Meltano 4.4 cannot pass as `decimal`.
            "TARGET_TIKTOK_AUDIENCES_MAX_REMOVAL_FRACTION": "0.4",
        }
        project = Project(root, meltano, env)
        project("install", timeout=400)
        installed = time.monotonic()

        # Run 1: the audience is created and filled with the consenting people.
        run1 = project("run", "tap-jsonl", LOADER)
        [audience] = fake.audiences()
        assert audience["name"] == "Newsletter subscribers (example)"
        audience_id = str(audience["audience_id"])
        assert fake.members(audience_id) == expected_members(rows)
        assert "bookmark value: None" in run1.stderr
        mappings = len(fake.requests_log("segment/mapping/"))
        assert mappings >= 1

        # Meltano stored the state the target emitted once TikTok had confirmed everything.
        state_ids = project("state", "list").stdout.split()
        [state_id] = [s for s in state_ids if LOADER in s]
        stored = json.loads(project("state", "get", state_id).stdout)
        assert "contacts" in stored["singer_state"]["bookmarks"]

        # Run 2, same data: the tap starts from the stored bookmark; nothing is sent.
        run2 = project("run", "tap-jsonl", LOADER)
        assert "bookmark value: None" not in run2.stderr
        assert re.search(r"bookmark value: '?\d{4}-", run2.stderr), run2.stderr[-2000:]
        assert len(fake.requests_log("segment/mapping/")) == mappings
        assert len(fake.audiences()) == 1

        # Run 3, the list changed: exactly the leaver goes and the newcomer comes.
        rows = contacts(range(2, 32))
        write_jsonl(data, rows)
        project("run", "tap-jsonl", LOADER)
        assert fake.members(audience_id) == expected_members(rows)
        sent = [r["body"]["action"] for r in fake.requests_log("segment/mapping/")[mappings:]]
        assert sorted(sent) == ["add", "delete"]

        # The operator commands, as Meltano plugin commands reading Meltano's settings.
        status = project("invoke", f"{LOADER}:status", "--format", "json")
        [row] = json.loads(status.stdout)
        consenting = sum(1 for r in rows if r["marketing_consent"])
        assert (row["audience_id"], row["confirmed"], row["last_result"]) == (
            audience_id,
            consenting,
            "ok",
        )
        assert row["status"] == "TOO_SMALL"
        check = project("invoke", f"{LOADER}:check")
        assert check.stdout.splitlines()[0] == "ok   token works (user: fake user)"

        # Run 4: 9 of the 20 people leave (45%): over the 0.4 from the environment, under the
        # default 0.5, so the refusal proves that the variable reached the target as a number.
        leaving = [r["id"] for r in rows if r["marketing_consent"]][:9]
        write_jsonl(data, [r for r in rows if r["id"] not in leaving])
        sent = len(fake.requests_log("segment/mapping/"))
        refused = project("run", "tap-jsonl", LOADER, ok=False)
        assert "over max_removal_fraction 0.4" in refused.stderr, refused.stderr[-2000:]
        assert len(fake.requests_log("segment/mapping/")) == sent
        assert fake.members(audience_id) == expected_members(rows)
    finally:
        fake.stop()
    print(
        f"meltano install {installed - started:.0f} s, runs and commands "
        f"{time.monotonic() - installed:.0f} s"
    )
