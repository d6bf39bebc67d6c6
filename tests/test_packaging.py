"""The package as PyPI would ship it: build both archives, check them, install the wheel cleanly.

Slow (a build and a fresh virtual environment): one module-scoped build serves every test.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, cwd=cwd, check=False
    )
    assert proc.returncode == 0, f"{args}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Built from a copy (with .git, for the version): a build writes its egg-info into the
    # tree it builds, and this checkout's must stay that of the installed package.
    source = tmp_path_factory.mktemp("source") / "repo"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(
            ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"
        ),
    )
    out = tmp_path_factory.mktemp("dist")
    _run(sys.executable, "-m", "build", "--outdir", out, source)
    return out


def _one(dist: Path, pattern: str) -> Path:
    found = sorted(dist.glob(pattern))
    assert len(found) == 1, found
    return found[0]


def test_archives_pass_twine_check(dist):
    proc = _run(sys.executable, "-m", "twine", "check", "--strict", *sorted(dist.iterdir()))
    assert proc.stdout.count("PASSED") == 2


def test_metadata_declares_the_license_by_spdx(dist):
    with zipfile.ZipFile(_one(dist, "*.whl")) as wheel:
        name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = wheel.read(name).decode()
        licenses = [n for n in wheel.namelist() if "/licenses/" in n]
    assert "License-Expression: Apache-2.0" in metadata
    assert any(n.endswith("/licenses/LICENSE") for n in licenses)
    assert "Keywords:" in metadata and "singer-target" in metadata
    assert "Project-URL:" in metadata


def test_wheel_holds_only_the_package(dist):
    with zipfile.ZipFile(_one(dist, "*.whl")) as wheel:
        tops = {n.split("/")[0] for n in wheel.namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"target_tiktok_audiences"}


def test_sdist_runs_its_own_tests(dist, tmp_path):
    with tarfile.open(_one(dist, "*.tar.gz")) as sdist:
        sdist.extractall(tmp_path, filter="data")
    root = next(tmp_path.iterdir())
    for needed in (
        "tests/conftest.py",
        "tests/fake_tiktok.py",
        "tests/postgres.py",
        "examples/contacts.singer",
        "meltano.yml",
        "LICENSE",
        "CHANGELOG.md",
    ):
        assert (root / needed).is_file(), needed
    # The unpacked sdist's own package and tests, not this checkout's.
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_reporting.py",
            "tests/test_identifiers.py",
        ],
        capture_output=True,
        text=True,
        cwd=root,
        check=False,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout


def test_wheel_installs_cleanly_and_runs_the_dry_run(dist, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    _run(python, "-m", "pip", "install", "-q", _one(dist, "*.whl"))
    version = _run(env_dir / "bin" / "target-tiktok-audiences", "--version").stdout
    assert "target-tiktok-audiences" in version
    config = json.loads((REPO / "examples" / "config.dry-run.json").read_text())
    config["membership_store"] = str(tmp_path / "store.sqlite")
    config["dry_run_output"] = str(tmp_path / "dry-run.jsonl")
    (tmp_path / "config.json").write_text(json.dumps(config))
    proc = _run(
        env_dir / "bin" / "target-tiktok-audiences",
        "--config",
        tmp_path / "config.json",
        "--input",
        REPO / "examples" / "contacts.singer",
        cwd=tmp_path,
    )
    assert "[dry run]: added" in proc.stderr
    requests = [json.loads(line) for line in (tmp_path / "dry-run.jsonl").read_text().splitlines()]
    assert any(r["path"] == "segment/mapping/" for r in requests)
