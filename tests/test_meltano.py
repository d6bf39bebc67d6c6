"""The Meltano way: this repository's meltano.yml, Meltano and tap-jsonl from PyPI, a fake TikTok.

The slow tests build a real Meltano project in a temp dir (its own venv with Meltano, the loader
installed editable from this checkout, the sample tap from PyPI). One runs `meltano run` twice and
checks that the audience ends up right and that the second run resumes from the state Meltano
stored without sending anything; one runs the schedule, whose job ends with the monitor, and
checks that a STALE audience fails it. They need PyPI and take a few minutes; the fast tests
check meltano.yml against the target's settings schema so the two cannot drift apart.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
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
UTILITY = "tiktok-audiences"
SCHEDULE = "tiktok-audiences-every-6h"


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
        "monitor": "tiktok-audiences",
        "list": "tiktok-audiences",
    }
    assert loader["commands"]["check"]["args"].split()[0] == "check"
    assert loader["commands"]["status"]["args"].split()[0] == "status"
    assert loader["commands"]["monitor"]["args"].split() == ["status", "--fail-on", "FAILED,STALE"]
    assert loader["commands"]["list"]["args"].split()[0] == "list"
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


def test_the_schedules_job_syncs_then_runs_the_loaders_monitor():
    """A job may end with a utility's command, not a loader's: the utility runs the loader's.

    `meltano invoke` gives the loader's `monitor` the loader's settings, so the utility has none
    of its own to drift from them; its executable is the meltano running the project, so it
    installs nothing.
    """
    project = project_file()
    [schedule] = [s for s in project["schedules"] if s["name"] == SCHEDULE]
    [job] = [j for j in project["jobs"] if j["name"] == schedule["job"]]
    assert job["tasks"] == [f"tap-jsonl {LOADER}", f"{UTILITY}:monitor"]
    utility = plugin("utilities", UTILITY)
    assert utility["executable"] == ".meltano/run/bin"
    assert "pip_url" not in utility and "settings" not in utility
    assert utility["commands"]["monitor"]["args"].split() == ["invoke", f"{LOADER}:monitor"]


def readme_monitoring() -> str:
    """README's recipe for the schedule that monitors."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("**Monitoring with `--fail-on`.**", 1)[1]
    return section.split("\n### ", 1)[0]


def test_readme_schedule_recipe_is_meltano_yml():
    """The README's snippet is meltano.yml's utility and job, and its commands name them."""
    recipe = readme_monitoring()
    snippet = yaml.safe_load(recipe.split("```yaml\n", 1)[1].split("```", 1)[0])
    [utility] = snippet["plugins"]["utilities"]
    defined = plugin("utilities", UTILITY)
    assert utility == {
        **defined,
        "commands": {"monitor": {"args": defined["commands"]["monitor"]["args"]}},
    }
    [schedule] = [s for s in project_file()["schedules"] if s["name"] == SCHEDULE]
    assert snippet["jobs"] == [j for j in project_file()["jobs"] if j["name"] == schedule["job"]]
    add = (
        f"meltano schedule add {SCHEDULE} --job {schedule['job']} "
        f"--interval '{schedule['interval']}'"
    )
    assert add in recipe
    assert f"meltano schedule run {SCHEDULE}" in recipe


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
    kept = ["examples/contacts.jsonl", "meltano.yml", "target_tiktok_audiences/store/__init__.py"]
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
    """Meltano from PyPI in a venv of its own, as a user would install it; one per session.

    It lives at a path of the session's temp dir, so every module that asks for it (the
    PostgreSQL pipeline too) shares one install.
    """
    venv = tmp_path_factory.getbasetemp() / "meltano-venv"
    executable = venv / "bin" / "meltano"
    if executable.exists():
        return executable
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", MELTANO],
        check=True,
        timeout=400,
    )
    return executable


def meltano_env(fake: FakeTikTok, **settings: str) -> dict[str, str]:
    """This process's environment without its Meltano or plugin variables, plus the loader's.

    The loader talks to `fake` with the test token and advertiser, for real (no dry run), and
    holds no first upload; `settings` adds or replaces variables.
    """
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TARGET_TIKTOK_AUDIENCES_", "TAP_", "MELTANO_"))
        and k not in ("VIRTUAL_ENV", "PYTHONPATH")
    }
    return {
        **inherited,
        "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
        "TARGET_TIKTOK_AUDIENCES_ACCESS_TOKEN": TOKEN,
        "TARGET_TIKTOK_AUDIENCES_API_URL": fake.url,
        "TARGET_TIKTOK_AUDIENCES_ADVERTISER_IDS": json.dumps([ADVERTISER]),
        "TARGET_TIKTOK_AUDIENCES_DRY_RUN": "false",
        "TARGET_TIKTOK_AUDIENCES_MIN_AUDIENCE_SIZE": "0",
        **settings,
    }


class Project:
    """A Meltano project made from this repository's meltano.yml."""

    def __init__(self, root: Path, meltano: Path, env: dict[str, str]) -> None:
        self.root = root
        self.meltano = meltano
        self.env = env

    def __call__(
        self, *args: str, timeout: float = 180, ok: bool = True, **env: str
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(self.meltano), *args],
            cwd=self.root,
            env={**self.env, **env},
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


def project_dir(tmp_path: Path) -> Path:
    """A directory holding this repository's meltano.yml, its loader installed from here."""
    root = tmp_path / "project"
    root.mkdir()
    text = (REPO / "meltano.yml").read_text()
    assert text.count("pip_url: -e .\n") == 1
    (root / "meltano.yml").write_text(text.replace("pip_url: -e .\n", f"pip_url: -e {REPO}\n"))
    return root


def test_meltano_run_syncs_and_resumes_from_stored_state(tmp_path, meltano):
    started = time.monotonic()
    root = project_dir(tmp_path)
    data = root / "contacts.jsonl"
    rows = contacts(range(1, 31))
    write_jsonl(data, rows)

    fake = FakeTikTok().start()
    try:
        fake.add_advertiser(ADVERTISER, name="Main account")
        fake.add_token(TOKEN, [ADVERTISER])
        env = meltano_env(
            fake,
            TAP_JSONL_PATH=str(data),
            # A number setting from the environment, which Meltano 4.4 cannot pass as `decimal`.
            TARGET_TIKTOK_AUDIENCES_MAX_REMOVAL_FRACTION="0.4",
        )
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

        # Run 2, same data: Meltano hands the tap its stored bookmark; the target finds everyone
        # unchanged (tap-jsonl reads the whole file again), so nothing is sent.
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

        # A bad setting stops the target at start: its own line is the first error Meltano
        # shows, whether the tap was done by then or Meltano adds a BrokenPipeError of its own.
        failed = project(
            "run", "tap-jsonl", LOADER, ok=False, TARGET_TIKTOK_AUDIENCES_PHONE_DEFAULT_REGION="XX"
        )
        errors = [line for line in failed.stderr.splitlines() if "[error" in line]
        assert errors[0].endswith(
            "target-tiktok-audiences `phone_default_region` is 'XX', not a region phonenumbers "
            "knows: use an ISO 3166 code such as US, GB or DE."
        ), failed.stderr[-3000:]
    finally:
        fake.stop()
    print(
        f"meltano install {installed - started:.0f} s, runs and commands "
        f"{time.monotonic() - installed:.0f} s"
    )


def move_syncs_back(root: Path, hours: float) -> None:
    """Make every sync the project's SQLite store remembers `hours` older."""
    db = sqlite3.connect(root / ".tiktok-audiences" / "membership.sqlite")
    try:
        with db:
            db.execute("UPDATE audiences SET last_sync_at = last_sync_at - ?", (hours * 3600,))
    finally:
        db.close()


def test_the_schedule_fails_when_an_audience_is_stale(tmp_path, meltano):
    """`meltano schedule run`, as a scheduler runs it: the sync, then the monitor.

    `stale_after_hours` is set in meltano.yml on the loader only, so the monitor sees it only
    if it really reads the loader's settings.
    """
    root = project_dir(tmp_path)
    data = root / "contacts.jsonl"
    write_jsonl(data, contacts(range(1, 31)))
    fake = FakeTikTok().start()
    try:
        fake.add_advertiser(ADVERTISER, name="Main account")
        fake.add_token(TOKEN, [ADVERTISER])
        project = Project(root, meltano, meltano_env(fake, TAP_JSONL_PATH=str(data)))
        project("install", timeout=400)

        # Synced; the monitor sees TOO_SMALL, which is not a word it fails on.
        first = project("schedule", "run", SCHEDULE)
        [audience] = fake.audiences()
        assert re.search(r"contacts .* ok .* TOO_SMALL", first.stdout + first.stderr)

        # TikTok matches enough people now; the tap stops delivering (its file is empty, so the
        # audience is left alone) and the last sync was two hours ago.
        fake.set_audience_details(str(audience["audience_id"]), cover_num=5000)
        project("config", "set", LOADER, "stale_after_hours", "1")
        write_jsonl(data, [])
        move_syncs_back(root, 2)
        sent = len(fake.requests_log("segment/mapping/"))
        stale = project("schedule", "run", SCHEDULE, ok=False)
        assert len(fake.requests_log("segment/mapping/")) == sent
        output = stale.stdout + stale.stderr
        assert "--fail-on FAILED,STALE: 1 audience(s): contacts STALE" in output, output[-3000:]
        # Meltano's last block (the monitor) failed; the sync before it did not.
        assert re.findall(r"\[(\w+) *\] meltano +Block run completed", output) == ["info", "error"]

        # The tap delivers again: synced, ACTIVE, and the schedule succeeds.
        write_jsonl(data, contacts(range(2, 32)))
        fresh = project("schedule", "run", SCHEDULE)
        assert re.search(r"contacts .* ok .* ACTIVE", fresh.stdout + fresh.stderr)
    finally:
        fake.stop()


def readme_recipe() -> list[str]:
    """The commands of README's recipe for adding the loader to a Meltano project."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n#### Adding the loader to a Meltano project\n", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def test_readme_recipe_adds_the_loader_to_a_fresh_project(tmp_path, meltano):
    """README's commands, run in a new project; the package comes from this checkout."""
    commands = readme_recipe()
    assert commands[0].startswith("curl -fsSLO https://raw.githubusercontent.com/")
    assert commands[0].endswith("/main/meltano-hub.yml")
    assert commands[1] == (
        "meltano add --plugin-type loader target-tiktok-audiences --from-ref meltano-hub.yml"
    )
    readme = (REPO / "README.md").read_text()
    from_checkout = f"sed -i 's|^pip_url: .*|pip_url: -e {REPO}|' meltano-hub.yml"
    assert from_checkout.replace(str(REPO), "/path/to/target-tiktok-audiences") in readme

    fake = FakeTikTok().start()
    try:
        fake.add_advertiser(ADVERTISER, name="Main account")
        fake.add_token(TOKEN, [ADVERTISER])
        env = meltano_env(fake, TIKTOK_TOKEN=TOKEN, PATH=f"{meltano.parent}:{os.environ['PATH']}")
        for name in ("ACCESS_TOKEN", "ADVERTISER_IDS"):  # the recipe sets them
            del env[f"TARGET_TIKTOK_AUDIENCES_{name}"]
        project = Project(tmp_path / "existing", meltano, env)
        subprocess.run(
            [str(meltano), "init", "--no-usage-stats", project.root.name],
            cwd=tmp_path,  # not this checkout: Meltano would take its meltano.yml as the project
            env=env,
            capture_output=True,
            check=True,
            timeout=120,
        )
        # No network: the definition comes from this checkout, and so does the package.
        (project.root / "meltano-hub.yml").write_text((REPO / "meltano-hub.yml").read_text())
        for command in [from_checkout, *commands[1:]]:
            proc = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", command],
                cwd=project.root,
                env=env,
                capture_output=True,
                text=True,
                timeout=400,
                check=False,
            )
            assert proc.returncode == 0, f"{command}:\n{proc.stdout}\n{proc.stderr}"
            assert TOKEN not in proc.stdout + proc.stderr
        assert proc.stdout.splitlines()[:2] == [
            "ok   token works (user: fake user)",
            f"ok   advertiser {ADVERTISER} reachable (Main account, STATUS_ENABLE)",
        ]
        assert TOKEN in (project.root / ".env").read_text(), "the token goes to .env"
        assert TOKEN not in (project.root / "meltano.yml").read_text()
        config = json.loads(project("config", "print", "--format", "json", LOADER).stdout)
        assert config["audiences"] == {"contacts": {"audience_name": "Newsletter subscribers"}}
    finally:
        fake.stop()
