"""No token and no database password in any output: every error path, both console scripts.

Each test runs the real console scripts and scans stderr, stdout and every file the run left in
its temp dir (all but the config files the test itself wrote) for each secret, whole or in any
piece of 6 characters or more that sits between spaces or control characters, and for the
secret's `repr`, which is how libraries quote a value in their messages.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from target_tiktok_audiences.console import ScrubbedStream
from target_tiktok_audiences.redaction import MASK, remember_secret
from tests.conftest import TOKEN, record, schema, state

CLI = shutil.which("tiktok-audiences") or str(Path(sys.executable).parent / "tiktok-audiences")
TARGET = shutil.which("target-tiktok-audiences") or str(
    Path(sys.executable).parent / "target-tiktok-audiences"
)
PASSWORD = "pg-pw-3f9c1b7e"
UNREACHABLE = "127.0.0.1:9"  # the discard port: nothing listens there
PEOPLE = [schema(), record(id=1, email="a@example.com"), state({"n": 1})]
WRITTEN = ("config.json", "cli.json")  # what the tests write themselves, secrets included


def pieces(secret: str) -> set[str]:
    parts = {p for p in re.split(r"[\s\x00-\x1f]+", secret) if len(p) >= 6}
    return {secret, repr(secret)[1:-1], *parts}


def leaks(secret: str, *texts: str, root: Path | None = None) -> list[str]:
    """Where any piece of `secret` shows up: in `texts` (by index) or in files under `root`."""
    found = [f"text {i}" for i, text in enumerate(texts) for p in pieces(secret) if p in text]
    for path in sorted(root.rglob("*")) if root else []:
        if path.is_file() and path.name not in WRITTEN:
            data = path.read_bytes()
            found += [str(path) for p in pieces(secret) if p.encode() in data]
    return found


def cli(tmp_path: Path, *args: str, config: dict, env: dict | None = None):
    (tmp_path / "cli.json").write_text(json.dumps(config))
    base = {k: v for k, v in os.environ.items() if not k.startswith("TARGET_TIKTOK_AUDIENCES_")}
    return subprocess.run(
        [CLI, *args, "--config", str(tmp_path / "cli.json")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**base, **(env or {})},
        timeout=120,
        check=False,
    )


def assert_clean(secret: str, tmp_path: Path, *outputs: str) -> None:
    assert leaks(secret, *outputs, root=tmp_path) == []


# The token


@pytest.mark.parametrize(
    ("token", "works"),
    [
        (f"{TOKEN}\n", True),
        (f" {TOKEN}\r\n", True),
        (f"{TOKEN[:10]} {TOKEN[10:]}", False),
        (f"{TOKEN[:10]}\n{TOKEN[10:]}", False),
        (f"{TOKEN}\x7f", False),
    ],
    ids=["trailing-newline", "crlf", "inner-space", "inner-newline", "delete-char"],
)
def test_a_malformed_token_never_shows(tmp_path, target, token, works):
    run = target.run(PEOPLE, access_token=token)
    assert run.returncode == (0 if works else 1), run.stderr
    outputs = [run.stdout, run.stderr]
    for command in ("check", "status"):
        done = cli(tmp_path, command, config={**target.config, "access_token": token})
        assert done.returncode == (0 if works else 1), done.stderr
        assert "Traceback" not in done.stderr
        outputs += [done.stdout, done.stderr]
    assert_clean(token, tmp_path, *outputs)


def test_a_revoked_token_never_shows(tmp_path, target, fake):
    assert target.run(PEOPLE).returncode == 0
    fake.remove_token(TOKEN)
    newcomer = [*PEOPLE[:-1], record(id=2, email="b@example.com")]
    run = target.run(newcomer, env={"TARGET_TIKTOK_AUDIENCES_LOGLEVEL": "debug"})
    assert run.returncode == 1
    outputs = [run.stdout, run.stderr]
    for command in ("check", "status"):
        done = cli(tmp_path, command, config=target.config)
        assert done.returncode == 1
        outputs += [done.stdout, done.stderr]
    assert_clean(TOKEN, tmp_path, *outputs)


def test_a_token_in_a_bad_config_never_shows(tmp_path, target):
    bad = [
        {"access_token": [TOKEN]},
        {"access_token": {"value": TOKEN}},
        {"access_token": TOKEN, "min_audience_size": "many"},
        {"access_token": TOKEN, "audiences": {"c": {"audience_id": TOKEN, "audience_name": "x"}}},
        {"access_token": TOKEN, "api_url": f"ftp://{TOKEN}@example.com"},
    ]
    for overrides in bad:
        run = target.run(PEOPLE, **overrides)
        assert run.returncode == 1, overrides
        done = cli(tmp_path, "check", config={**target.config, **overrides})
        assert done.returncode == 1, overrides
        assert_clean(TOKEN, tmp_path, run.stdout, run.stderr, done.stdout, done.stderr)


def test_a_library_traceback_never_shows_the_token(tmp_path, target):
    """A stream map that fails on a value equal to the token: the SDK logs a traceback."""
    maps = {"contacts": {"email": "int(config['tok'])"}}
    run = target.run(PEOPLE, stream_maps=maps, stream_map_config={"tok": TOKEN})
    assert run.returncode != 0
    assert "Traceback" in run.stderr or "invalid literal" in run.stderr, run.stderr
    assert MASK in run.stderr
    assert_clean(TOKEN, tmp_path, run.stdout, run.stderr)


def test_a_dry_run_writes_no_token(tmp_path, target):
    run = target.run(PEOPLE, dry_run=True, dry_run_output=str(tmp_path / "out-dry-run.jsonl"))
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "out-dry-run.jsonl").read_text()
    assert_clean(TOKEN, tmp_path, run.stdout, run.stderr)


# The database password


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"postgresql://app:{PASSWORD}@{UNREACHABLE}/audiences", f"app:{MASK}@{UNREACHABLE}"),
        (f"postgresql://app@{UNREACHABLE}/audiences?password={PASSWORD}", f"password={MASK}"),
        (
            f"postgresql://app@{UNREACHABLE}/audiences?sslmode=disable&password={PASSWORD}&x=1",
            f"password={MASK}&x=1",
        ),
        (f"postgres://app:{PASSWORD}@{UNREACHABLE}/audiences?schema=bad-schema", "schema"),
    ],
    ids=["user-info", "query", "query-middle", "bad-schema"],
)
def test_an_unreachable_store_never_shows_its_password(tmp_path, target, url, shown):
    run = target.run(PEOPLE, membership_store=url)
    assert run.returncode == 1
    assert len(run.errors) == 1, run.stderr
    outputs = [run.stdout, run.stderr]
    for command in ("status", "check"):
        done = cli(tmp_path, command, config={**target.config, "membership_store": url})
        outputs += [done.stdout, done.stderr]
        assert "Traceback" not in done.stderr
    env = {"TARGET_TIKTOK_AUDIENCES_MEMBERSHIP_STORE": url}
    done = cli(tmp_path, "status", config=target.config, env=env)
    assert done.returncode == 1
    outputs += [done.stdout, done.stderr]
    assert_clean(PASSWORD, tmp_path, *outputs)
    assert shown in run.errors[0]


def test_a_store_setting_of_the_wrong_type_never_shows_its_password(tmp_path, target):
    url = f"postgresql://app:{PASSWORD}@{UNREACHABLE}/audiences"
    run = target.run(PEOPLE, membership_store=[url])
    assert run.returncode == 1
    done = cli(tmp_path, "status", config={**target.config, "membership_store": [url]})
    assert done.returncode == 1
    assert_clean(PASSWORD, tmp_path, run.stdout, run.stderr, done.stdout, done.stderr)


def test_a_store_copy_that_fails_never_shows_either_password(tmp_path, target):
    assert target.run(PEOPLE).returncode == 0
    urls = [
        f"postgresql://app:{PASSWORD}@{UNREACHABLE}/audiences",
        f"postgresql://app@{UNREACHABLE}/audiences?password={PASSWORD}",
    ]
    base = {k: v for k, v in os.environ.items() if not k.startswith("TARGET_TIKTOK_AUDIENCES_")}
    outputs = []
    for url in urls:
        for source, dest in ((url, str(tmp_path / "copy.sqlite")), (str(target.store_path), url)):
            done = subprocess.run(
                [CLI, "store", "copy", "--from", source, "--to", dest],
                capture_output=True,
                text=True,
                cwd=tmp_path,
                env=base,
                timeout=120,
                check=False,
            )
            assert done.returncode == 1
            assert "Traceback" not in done.stderr
            outputs += [done.stdout, done.stderr]
    assert_clean(PASSWORD, tmp_path, *outputs)


def test_a_refused_auth_never_shows_the_app_secret(tmp_path, fake):
    fake.add_app("app-1", "app-secret-9d1e")
    done = subprocess.run(
        [CLI, "auth", "--app-id", "app-1", "--secret", "app-secret-9d1e", "--auth-code", "nope"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "TARGET_TIKTOK_AUDIENCES_API_URL": fake.url},
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert_clean("app-secret-9d1e", tmp_path, done.stdout, done.stderr)


# The stderr wrapper


def test_scrubbed_stream_masks_a_secret_written_in_pieces():
    remember_secret("piecewise-secret-77")
    out = io.StringIO()
    stream = ScrubbedStream(out)
    stream.write("first piecewise-")
    stream.write("secret-77 then more\nand a partial ")
    assert out.getvalue() == f"first {MASK} then more\n"
    stream.write("piecewise-secret-77")
    stream.flush()
    assert out.getvalue() == f"first {MASK} then more\nand a partial {MASK}"
    stream.writelines(["postgresql://u:", "pw-in-url@h/d\n"])
    assert out.getvalue().endswith(f"postgresql://u:{MASK}@h/d\n")


def test_scrubbed_stream_takes_text_only_and_has_no_way_around():
    stream = ScrubbedStream(io.StringIO())
    with pytest.raises(TypeError):
        stream.write(b"bytes")
    assert not hasattr(stream, "buffer")
    assert stream.writable()
