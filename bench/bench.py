"""Benchmark of target-tiktok-audiences (issues 5, 14): throughput, pacing, incremental, memory.

    .venv/bin/python bench/bench.py [--n 1000000] [--only local,pacing,incremental,memory,composed]
                                    [--only first-sync] [--only profile]
                                    [--previous PATH] [--keep DIR] [--repeat R] [--seed S]

Every comparison runs side by side in one invocation (the machine may be shared, so absolute
numbers drift). Each contender is a subprocess reading the Singer file on stdin; its wall time,
CPU time and memory cover the process and its workers (see TreeMonitor). See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import linecache
import math
import os
import platform
import pstats
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO))

from baseline_target import hash_person  # noqa: E402
from datagen import (  # noqa: E402
    COMPOSED_EXCLUDE,
    COMPOSED_STREAMS,
    Composed,
    Dataset,
    composed_dataset,
    dataset,
)

from target_tiktok_audiences.identifiers import (  # noqa: E402
    DEFAULT_IDENTIFIER_FIELDS,
    IdentifierExtractor,
)
from target_tiktok_audiences.identifiers.extraction import hashes_to_hex  # noqa: E402
from target_tiktok_audiences.settings import normalization_options  # noqa: E402
from target_tiktok_audiences.tiktok.pacing import MARGIN  # noqa: E402
from tests.fake_tiktok import RATE_LIMIT_KINDS, FakeTikTok, RateLimit  # noqa: E402

if TYPE_CHECKING:
    from pgstore import BenchPostgres

PYTHON = sys.executable
FAKE_SCRIPT = REPO / "tests" / "fake_tiktok.py"  # --freeze points it at a copy
TARGET = str(Path(PYTHON).parent / "target-tiktok-audiences")
ADVERTISER = "7000000000000000001"
TOKEN = "bench-token"
SECTIONS = ("local", "pacing", "incremental", "memory", "composed")
STORES = ("sqlite", "postgresql")
STORE_SECTIONS = ("incremental", "memory")  # run once per store in --stores
OPTIONAL_SECTIONS = ("first-sync", "profile")
PROFILE_PEOPLE = 100_000
HASH_CHECK_RECORDS = 2000  # section 1: records whose baseline hashes are compared with the target's
PACING_REQUESTS = (40, 200)  # section 2: one real run per count of mapping requests
PACING_LATENCY = 0.2
PACING_LIMIT = 10
PACING_GOAL = 1.10
PACING_GOAL_KIND = "bucket"  # section 2: the fake whose count the goals are judged by (issue 17)
BASELINE_GOAL = 5.0  # section 1: the target's records/s at least this times the baseline's
FLOOR_GOAL = 1.2  # sections 1 and first-sync: the target's wall at most this times the floor's
PREVIOUS_GOAL = 1.10  # --previous: this release's figure at most this times the previous one's
COMPOSED_GOAL = 1.3  # section 5: a composed first sync at most this times a simple one's
PATH_PREFIXES = (
    str(REPO) + "/",
    sysconfig.get_paths()["purelib"] + "/",
    sysconfig.get_paths()["stdlib"] + "/",
)

_REPORT_RE = re.compile(
    r"Audience .*?: added (?P<added>\d+), removed (?P<removed>\d+), changed (?P<changed>\d+), "
    r"unchanged (?P<unchanged>\d+), skipped (?P<skipped>\d+).*?requests (?P<requests>\d+), "
    r"(?P<seconds>[\d.]+) s"
)


def say(text: str = "") -> None:
    """Print a line at once (figures appear as they are measured)."""
    print(text, flush=True)


# --------------------------------------------------------------------------- processes


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    """Direct children of pid (via /proc/PID/task/*/children)."""
    kids: list[int] = []
    try:
        for task in os.scandir(f"/proc/{pid}/task"):
            try:
                kids += [int(x) for x in Path(task.path, "children").read_text().split()]
            except OSError:
                continue
    except OSError:
        pass
    return kids


def _cpu_ticks(pid: int) -> int | None:
    """utime + stime of pid itself, in clock ticks (also readable from a zombie)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[11]) + int(fields[12])


def _memory_kb(pid: int, *, pss: bool = True) -> tuple[int, int] | None:
    """(PSS, VmHWM) of pid in kB (PSS 0 unless `pss`); None once it has exited.

    PSS (proportional set size) shares each page among the processes that map it, so the PSS
    of a process tree adds up without counting the workers' shared pages once per worker.
    """
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text() if pss else "Pss: 0 kB"
    except OSError:
        return None
    hwm = pss_kb = None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
    for line in rollup.splitlines():
        if line.startswith("Pss:"):
            pss_kb = int(line.split()[1])
    if hwm is None or pss_kb is None:
        return None
    return pss_kb, hwm


class TreeMonitor(threading.Thread):
    """Samples a process and all its descendants: CPU, peak RSS each, peak of the summed PSS.

    The target may hand work to worker processes (a forkserver pool): `os.wait4` on the target
    counts neither their CPU nor their memory, so the whole tree is sampled every `interval`.
    PSS is read every `pss_every`-th sample only: reading smaps_rollup of five processes costs
    the monitor about 7 ms of CPU, which at 10 Hz is 7% of a core taken from a target that
    keeps both cores busy (a single-process floor leaves a core free for it).
    """

    def __init__(self, pid: int, interval: float = 0.1, pss_every: int = 1) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.pss_every = pss_every
        self._samples = 0
        self.cpu: dict[int, int] = {}
        self.hwm: dict[int, int] = {}
        self.peak_pss_kb = 0
        self._halt = threading.Event()

    def pids(self) -> list[int]:
        """The process and its live descendants."""
        seen, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            seen.append(pid)
            todo += _children(pid)
        return seen

    def sample(self, *, pss: bool | None = None) -> None:
        """One sample of every process in the tree (PSS too when due, or when `pss`)."""
        if pss is None:
            pss = self._samples % self.pss_every == 0
        self._samples += 1
        total = 0
        for pid in self.pids():
            memory = _memory_kb(pid, pss=pss)
            ticks = _cpu_ticks(pid)
            if memory is None or ticks is None:
                continue
            self.cpu[pid] = ticks
            self.hwm[pid] = max(self.hwm.get(pid, 0), memory[1])
            total += memory[0]
        if pss:
            self.peak_pss_kb = max(self.peak_pss_kb, total)

    def run(self) -> None:
        """Sample until stopped."""
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval)

    def stop(self) -> None:
        """Stop sampling (after one last sample) and wait for the thread."""
        self._halt.set()
        self.join()
        self.sample(pss=True)


@dataclass
class Run:
    """One finished subprocess: times, peak RSS, exit status and its stderr.

    `maxrss_mb` is the main process's own peak RSS (VmHWM); `cpu` and `tree_pss_mb` (the peak
    of the summed PSS, sampled every 0.1 s, or 1 s in the speed section) cover it and every
    descendant (see TreeMonitor).
    """

    label: str
    wall: float
    cpu: float
    maxrss_mb: float
    tree_pss_mb: float
    processes: int
    returncode: int
    stderr_path: Path
    stdout_path: Path
    server_cpu: float | None = None  # the PostgreSQL server's CPU during the run, if measured

    @property
    def ok(self) -> bool:
        """True when the process exited 0."""
        return self.returncode == 0

    def stderr(self) -> str:
        """The process's stderr."""
        return self.stderr_path.read_text(errors="replace")

    def report(self) -> dict[str, float] | None:
        """The target's end-of-run audience line, parsed (None if absent)."""
        match = None
        for match in _REPORT_RE.finditer(self.stderr()):  # noqa: B007 - keep the last one
            pass
        if match is None:
            return None
        return {k: float(v) for k, v in match.groupdict().items()}

    def tail(self, lines: int = 8) -> str:
        """The last lines of stderr, for failures."""
        return "\n".join("    | " + x for x in self.stderr().splitlines()[-lines:])

    def cpu_text(self) -> str:
        """CPU of the target's tree, plus the PostgreSQL server's when measured."""
        server = "" if self.server_cpu is None else f" + PostgreSQL server {self.server_cpu:.1f} s"
        return f"cpu {self.cpu:.1f} s{server}"

    def memory(self) -> str:
        """Peak RSS, main process and whole tree."""
        return (
            f"peak RSS {self.maxrss_mb:7.1f} MB, tree PSS {self.tree_pss_mb:.1f} MB "
            f"({self.processes} process{'es' if self.processes > 1 else ''})"
        )


def run(
    label: str,
    cmd: list[str],
    stdin: Path,
    work: Path,
    *,
    env: dict[str, str] | None = None,
    pss_every: int = 1,
) -> Run:
    """Run cmd with stdin from a file: wall from start to exit; CPU and memory of its tree.

    The process gets its own session, so an interrupted bench kills it and its workers.
    `pss_every`: see TreeMonitor (the speed section reads PSS once a second, not ten times).
    """
    out, err = work / f"{label}.stdout", work / f"{label}.stderr"
    with stdin.open("rb") as fin, out.open("wb") as fout, err.open("wb") as ferr:
        started = time.perf_counter()
        proc = subprocess.Popen(
            cmd, stdin=fin, stdout=fout, stderr=ferr, cwd=work, env=env, start_new_session=True
        )
        monitor = TreeMonitor(proc.pid, pss_every=pss_every)
        monitor.start()
        try:
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
            wall = time.perf_counter() - started
            own = _cpu_ticks(proc.pid)  # the zombie still shows its final CPU times
            monitor.stop()
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    others = [pid for pid in monitor.cpu if pid != proc.pid]
    main_cpu = own / _CLK_TCK if own is not None else usage.ru_utime + usage.ru_stime
    cpu = main_cpu + sum(monitor.cpu[pid] for pid in others) / _CLK_TCK
    main_kb = max(monitor.hwm.get(proc.pid, 0), 0 if others else usage.ru_maxrss)
    return Run(
        label=label,
        wall=wall,
        cpu=cpu,
        maxrss_mb=main_kb / 1024,
        tree_pss_mb=monitor.peak_pss_kb / 1024,
        processes=1 + len(others),
        returncode=proc.returncode,
        stderr_path=err,
        stdout_path=out,
    )


def clean_env() -> dict[str, str]:
    """The environment without settings that would leak into the target's config."""
    return {k: v for k, v in os.environ.items() if not k.startswith("TARGET_TIKTOK_AUDIENCES_")}


def write_config(path: Path, **settings: Any) -> Path:
    """Write a target config file."""
    config = {"advertiser_ids": [ADVERTISER], "min_audience_size": 0, **settings}
    path.write_text(json.dumps(config, indent=2))
    return path


# Run by `python -c` with a checkout as argv[1]: put it first on sys.path, then run its target.
_PREVIOUS_LAUNCH = """
import sys
sys.path.insert(0, sys.argv.pop(1))
from target_tiktok_audiences.target import TargetTikTokAudiences
TargetTikTokAudiences.cli()
"""


@dataclass(frozen=True)
class Contender:
    """One release of the target: how to start it and what its environment adds.

    `current` is this checkout's console script (or its --freeze copy, through PYTHONPATH);
    `previous` is another checkout run with this venv's interpreter and dependencies, that
    checkout first on `sys.path` and on PYTHONPATH (which its worker processes inherit).
    """

    name: str
    command: tuple[str, ...]
    pythonpath: str | None = None

    def env(self) -> dict[str, str]:
        """The environment of its runs: clean_env(), its checkout first on PYTHONPATH."""
        env = clean_env()
        if self.pythonpath is not None:
            env["PYTHONPATH"] = os.pathsep.join(
                x for x in (self.pythonpath, env.get("PYTHONPATH")) if x
            )
        return env


CURRENT = Contender("current", (TARGET,))


def previous_contender(checkout: Path) -> Contender:
    """The target of another checkout (--previous), run from its sources with this venv."""
    root = str(checkout.resolve())
    return Contender("previous", (PYTHON, "-c", _PREVIOUS_LAUNCH, root), pythonpath=root)


def imported_package(contender: Contender) -> str:
    """The file of the package a contender's runs import (to prove which code is measured)."""
    probe = "import target_tiktok_audiences as t; print(t.__file__)"
    proc = subprocess.run(
        [PYTHON, "-c", probe],
        env=contender.env(),
        cwd=tempfile.gettempdir(),
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.stdout.strip() or proc.stderr.strip()[-300:]


def run_target(
    label: str,
    config: Path,
    data: Path,
    work: Path,
    *,
    pss_every: int = 1,
    contender: Contender = CURRENT,
) -> Run:
    """Run a release's target (the current one unless told) on a Singer file."""
    cmd = [*contender.command, "--config", str(config)]
    return run(label, cmd, data, work, env=contender.env(), pss_every=pss_every)


# --------------------------------------------------------------------------- fakes


@dataclass
class FakeProcess:
    """The fake TikTok server run as a script; `summary` is filled in when it stops."""

    url: str
    proc: subprocess.Popen[str]
    stderr_path: Path
    summary: dict[str, Any] = field(default_factory=dict)


@contextmanager
def fake_process(
    work: Path, *, latency: float, rate_limit: float, max_batch: int, rate_limit_kind: str
) -> Iterator[FakeProcess]:
    """Start the fake as a subprocess (bench/fake_server.py); on exit SIGTERM it, read its summary.

    fake_server.py runs tests/fake_tiktok.py's own main() and adds mapping-request arrival times.
    """
    err = work / "fake.stderr"
    cmd = [
        PYTHON, str(BENCH_DIR / "fake_server.py"), "--port", "0", "--token", TOKEN,
        "--advertiser", ADVERTISER, "--latency", str(latency), "--rate-limit", str(rate_limit),
        "--rate-limit-kind", rate_limit_kind, "--max-batch", str(max_batch),
    ]  # fmt: skip
    with err.open("w") as ferr:
        env = {**os.environ, "BENCH_FAKE_TIKTOK": str(FAKE_SCRIPT)}
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=ferr, text=True, env=env)
    assert proc.stdout is not None
    fake = FakeProcess(url=proc.stdout.readline().strip(), proc=proc, stderr_path=err)
    try:
        if not fake.url.startswith("http"):
            raise RuntimeError(f"fake server did not start: {err.read_text()[-500:]}")
        yield fake
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        text = err.read_text()
        start = text.rfind('{\n  "stats"')
        if start >= 0:
            fake.summary = json.loads(text[start:])


@contextmanager
def fake_in_process(max_batch: int = 10_000) -> Iterator[FakeTikTok]:
    """The fake in this process (no latency, no rate limit), for per-action request counts."""
    fake = FakeTikTok(max_batch=max_batch, log_bodies=False)
    fake.add_advertiser(ADVERTISER)
    fake.add_token(TOKEN, [ADVERTISER])
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


def busiest_second(times: list[float]) -> int:
    """The most arrivals within any 1-second window (the fake's sliding-window rule)."""
    times = sorted(times)
    best = lo = 0
    for hi, t in enumerate(times):
        while t - times[lo] >= 1.0:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def refused(times: list[float], limit: float, kind: str) -> int:
    """How many of these arrivals a server counting `limit` per second as `kind` would refuse."""
    rate_limit = RateLimit(limit, kind)
    return sum(not rate_limit.admit(t) for t in sorted(times))


def baseline_mismatches(data: Path, records: int = HASH_CHECK_RECORDS) -> tuple[int, int]:
    """(records compared, records hashed differently) by baseline_target.py and the target.

    The first `records` RECORDs of `data`, each hashed by the baseline's `hash_person` and by
    the package's `IdentifierExtractor`, both with the target's default fields and options.
    """
    options = normalization_options({})
    extract = IdentifierExtractor(DEFAULT_IDENTIFIER_FIELDS, options)
    compared = differ = 0
    with data.open("rb") as lines:
        for line in lines:
            message = json.loads(line)
            if message.get("type") != "RECORD":
                continue
            record = message["record"]
            hashes, _ = extract(record)
            differ += hashes_to_hex(hashes) != hash_person(record, options.phone_default_region)
            compared += 1
            if compared == records:
                break
    return compared, differ


def mapping_actions(fake: FakeTikTok) -> Counter[str]:
    """Mapping requests per action (add/delete) in the fake's log (needs log_bodies)."""
    return Counter(
        str((entry["body"] or {}).get("action"))
        for entry in fake.requests_log("segment/mapping/", bodies=True)
    )


def store_stats(path: Path) -> tuple[int, int, str]:
    """(bytes on disk incl. -wal, stored identifiers, how they were counted)."""
    size = sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        columns = [row[1] for row in db.execute("PRAGMA table_info(members)")]
        slots = [c for c in columns if re.fullmatch(r"s\d+", c)]
        if slots:
            expr = " + ".join(f"({c} IS NOT NULL)" for c in slots)
            ids = db.execute(f"SELECT COALESCE(SUM({expr}), 0) FROM members").fetchone()[0]
            how = f"non-null {'/'.join(slots)} in members"
        else:
            ids = db.execute("SELECT COUNT(*) FROM members").fetchone()[0]
            how = "rows of members (no s<N> slot columns found)"
    finally:
        db.close()
    return size, int(ids), how


# --------------------------------------------------------------------------- reporting


def error_line(r: Run) -> str:
    """The target's error, as its one-line message (the last ERROR log line, else stderr's)."""
    lines = [x for x in r.stderr().splitlines() if x.strip()]
    errors = [x for x in lines if "| ERROR" in x]
    last = errors[-1] if errors else (lines[-1] if lines else "(no output)")
    return last.rsplit(" | ", 1)[-1].strip()


def keep_best(best: dict[str, Any], got: dict[str, Any]) -> None:
    """Fold one round's figures into the best so far: the least of each float, else the first."""
    for key, value in got.items():
        old = best.get(key)
        if old is None or (isinstance(value, float) and isinstance(old, float) and value < old):
            best[key] = value


def rate(records: int, seconds: float) -> float:
    """Records per second."""
    return records / seconds if seconds > 0 else float("inf")


def goal(met: bool) -> str:
    """A goal verdict word."""
    return "met" if met else "MISSED"


def fmt_run(run_: Run, records: int) -> str:
    """One line of figures for a throughput run."""
    return (
        f"{rate(records, run_.wall):>10,.0f} rec/s  wall {run_.wall:8.2f} s  "
        f"cpu {run_.cpu:8.2f} s ({rate(records, run_.cpu):,.0f} rec/cpu-s)  "
        f"{run_.memory()}"
    )


def machine_facts() -> list[str]:
    """nproc, CPU model, memory, load, Python and key package versions."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "unknown"
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    versions = []
    for name in ("target-tiktok-audiences", "singer-sdk", "phonenumbers"):
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} missing")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"machine: nproc {os.cpu_count()}, CPU {model}, RAM {mem}, load avg {load}",
        f"python: {platform.python_implementation()} {platform.python_version()} "
        f"({sys.executable}); {', '.join(versions)}; sqlite {sqlite3.sqlite_version}",
        f"platform: {platform.platform()}",
    ]


# --------------------------------------------------------------------------- the bench


class Bench:
    """Runs the sections and collects the figures for the closing summary."""

    def __init__(
        self,
        args: argparse.Namespace,
        work: Path,
        cache: Path,
        stores: list[str],
        postgres: BenchPostgres | None = None,
        previous: Contender | None = None,
    ) -> None:
        self.args = args
        self.previous = previous
        self.contender = CURRENT  # whose runs the sections make now (see measuring)
        self.stores = stores
        self.postgres = postgres
        self.work = work
        self.cache = cache
        self.n: int = args.n
        self.batch: int = args.batch_size
        self.summary: list[str] = []
        self.line: dict[str, str] = {}
        self.ratios: list[float] = []  # checked current/previous ratios, for the SUMMARY line
        self.verdicts: list[tuple[str, bool]] = []
        self._data: dict[int, Dataset] = {}
        self._first_real: dict[tuple[str, str, int], dict[str, Any]] = {}

    # helpers

    def contenders(self) -> list[Contender]:
        """The releases each section measures: the previous one first (--previous), then this."""
        return [self.previous, CURRENT] if self.previous is not None else [CURRENT]

    @contextmanager
    def measuring(self, contender: Contender) -> Iterator[None]:
        """Make the sections' runs those of `contender` while inside.

        The previous release is the reference, not the code under test: while it is measured,
        its directories and databases get a `previous` prefix, and neither goal verdicts nor
        summary lines are recorded (its figures are set against this release's by `versus`).
        """
        self.contender = contender
        try:
            yield
        finally:
            self.contender = CURRENT

    @property
    def reference(self) -> bool:
        """True while the previous release is being measured."""
        return self.contender is not CURRENT

    def note(self, text: str) -> None:
        """A closing-summary line (none for the previous release's runs)."""
        if not self.reference:
            self.summary.append(text)

    def versus(self, title: str, rows: list[tuple[str, Any, Any, str, bool]]) -> None:
        """Print this release's figures beside the previous one's, with the ratio.

        Rows are (label, current, previous, format, checked); a checked row is a goal: this
        release at most PREVIOUS_GOAL times the previous one (lower is better for all of them).
        """
        width = max(len(title), *(len(label) for label, *_ in rows))
        say(f"  {title:<{width}}  {'current':>12} | {'previous':>12}  current/previous")
        parent = ""
        for label, current, previous, spec, checked in rows:
            if not label.startswith(" "):
                parent = label
            name = label if label == parent else f"{parent}, {label.strip()}"
            cells = [
                f"{'-' if value is None else format(value, spec):>12}"
                for value in (current, previous)
            ]
            line = f"  {label:<{width}}  {' | '.join(cells)}"
            if current is not None and previous:
                ratio = current / previous
                line += f"  x{ratio:.3f}"
                if checked:
                    line += f" (goal <= {PREVIOUS_GOAL})"
                    self.ratios.append(ratio)
                    self.check(
                        f"vs previous: {title}, {name}",
                        ratio <= PREVIOUS_GOAL,
                        f"{title}, {name}: x{ratio:.3f} the previous release's "
                        f"(goal <= {PREVIOUS_GOAL})",
                    )
            say(line)

    def data(self, n: int) -> Dataset:
        """The data set of n people (generated once, cached on disk)."""
        if n not in self._data:
            ds = dataset(n, self.args.seed, self.cache)
            self._data[n] = ds
            e = ds.expected
            say(
                f"data n={n:,}: {ds.first.name} ({ds.first.stat().st_size / 1e6:,.1f} MB) "
                f"ready in {ds.seconds:.1f} s; ids: email {e.email:,}, phone {e.phone:,}, "
                f"idfa {e.idfa:,}, aaid {e.aaid:,} (total {e.total_ids:,})"
            )
        return self._data[n]

    def dir(self, name: str) -> Path:
        """A fresh working directory for one scenario (under `previous/` for that release)."""
        path = self.work / "previous" / name if self.reference else self.work / name
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        return path

    def check(self, name: str, met: bool, text: str) -> None:
        """Record a goal verdict and its summary line (not for the previous release's runs)."""
        if self.reference:
            return
        self.verdicts.append((name, met))
        self.summary.append(f"  [{goal(met):>6}] {text}")

    def new_store(self, kind: str, name: str, work: Path) -> str:
        """A fresh, empty membership store: a file in work, or a database of its own."""
        if kind == "sqlite":
            return str(work / "store.sqlite")
        assert self.postgres is not None
        return self.postgres.new_store(f"previous_{name}" if self.reference else name)

    def store_stats(self, kind: str, store: str) -> tuple[int, int, str]:
        """(bytes, stored identifiers, how they were counted) of a store after a run."""
        if kind == "sqlite":
            return store_stats(Path(store))
        from pgstore import store_stats as pg_store_stats

        return pg_store_stats(store)

    def target(self, kind: str, label: str, config: Path, data: Path, work: Path) -> Run:
        """run_target of the release measured now, plus the PostgreSQL server's CPU."""
        server = self.postgres if kind == "postgresql" else None
        before = server.cpu_seconds() if server else None
        r = run_target(label, config, data, work, contender=self.contender)
        after = server.cpu_seconds() if server else None
        if before is not None and after is not None:
            r.server_cpu = after - before
        return r

    @staticmethod
    def figure(figures: dict[str, dict[str, Any]], key: str) -> dict[str, Any]:
        """One figure of every store that has it."""
        return {kind: got.get(key) for kind, got in figures.items()}

    def pair(self, figures: dict[str, dict[str, Any]], key: str, spec: str) -> str:
        """One figure of every store, `a|b` in --stores order (`-` where missing)."""
        values = [figures.get(kind, {}).get(key) for kind in self.stores]
        return "|".join("-" if v is None else spec.format(v) for v in values)

    def compare(self, rows: list[tuple[str, dict[str, Any], str]]) -> None:
        """Print figures side by side, one column per store, and postgresql / sqlite."""
        both = len(self.stores) == 2
        width = max(len(label) for label, _, _ in rows)
        head = " | ".join(f"{kind:>12}" for kind in self.stores)
        say(f"  {'side by side':<{width}}  {head}" + ("  postgresql/sqlite" if both else ""))
        for label, values, spec in rows:
            cells = []
            for kind in self.stores:
                value = values.get(kind)
                cells.append(f"{'-' if value is None else format(value, spec):>12}")
            line = f"  {label:<{width}}  {' | '.join(cells)}"
            a, b = (values.get(kind) for kind in STORES)
            if both and spec.endswith("f") and a and b is not None and not math.isnan(a + b):
                line += f"  x{b / a:.2f}"
            say(line)

    def failed(self, section: str, run_: Run) -> None:
        """Report a failed run and note it in the summary."""
        say(f"  {self.contender.name} {run_.label} FAILED (exit {run_.returncode}):\n{run_.tail()}")
        release = "previous release's " if self.reference else ""
        self.summary.append(f"  [FAILED] {section}: {release}{run_.label} exit {run_.returncode}")
        self.verdicts.append((f"{section} run ({self.contender.name})", False))

    # 1. local throughput

    def local(self) -> None:
        """Real target (dry run) vs plain SDK BatchSink target vs bare loop, first sync."""
        say("\n== 1. Local throughput: first sync, everyone new, Singer file on stdin ==")
        ds = self.data(self.n)
        work = self.dir("local")
        (work / "baseline.json").write_text("{}")
        compared, differ = baseline_mismatches(ds.first)
        say(f"  baseline hashes vs the target's, first {compared:,} records: {differ} differ")
        self.check(
            "baseline hashes",
            compared > 0 and differ == 0,
            f"baseline hashes the first {compared:,} records as the target does: {differ} "
            "differ (goal 0)",
        )
        names = ["floor", "target", *(["previous"] if self.previous else []), "baseline"]
        best = self.rounds("local", names, ds, work)
        if best is None:
            return
        floor, target, baseline = best["floor"], best["target"], best["baseline"]
        speedup = baseline.wall / target.wall
        say(
            f"  target vs baseline: x{speedup:.2f} the records/s (goal >= {BASELINE_GOAL})"
            f"{'' if self.args.repeat == 1 else f'; best of {self.args.repeat}'}"
        )
        slowdown = self.versus_floor("local", target, floor)
        say(f"  cpu: target {target.cpu:.1f} s, baseline {baseline.cpu:.1f} s")
        self.note(
            f"  local: target {rate(ds.n, target.wall):,.0f} rec/s (RSS {target.maxrss_mb:.0f} "
            f"MB, tree PSS {target.tree_pss_mb:.0f} MB, cpu {target.cpu:.0f} s), baseline "
            f"{rate(ds.n, baseline.wall):,.0f} rec/s (RSS {baseline.maxrss_mb:.0f} MB, cpu "
            f"{baseline.cpu:.0f} s), floor {rate(ds.n, floor.wall):,.0f} rec/s (RSS "
            f"{floor.maxrss_mb:.0f} MB, cpu {floor.cpu:.0f} s)"
        )
        self.check(
            "x baseline",
            speedup >= BASELINE_GOAL,
            f"target/baseline x{speedup:.2f} (goal >= {BASELINE_GOAL})",
        )
        self.line["target"] = f"target={rate(ds.n, target.wall):,.0f} rec/s"
        self.line["baseline"] = f"baseline={rate(ds.n, baseline.wall):,.0f} rec/s (x{speedup:.2f})"
        self.line["floor"] = f"floor={rate(ds.n, floor.wall):,.0f} rec/s (x{slowdown:.2f})"
        if "previous" in best:
            self.versus_first_sync(target, best["previous"])

    def versus_floor(self, section: str, target: Run, floor: Run) -> float:
        """Check the target's wall against the floor's (FLOOR_GOAL); print the CPU ratio too.

        The floor runs in one process and the target on every core, so the wall ratio credits
        the target with its workers; the CPU ratio beside it is the work done for the same
        hashes. Returns the wall ratio.
        """
        slowdown = target.wall / floor.wall
        say(
            f"  target vs floor: takes x{slowdown:.2f} the floor's time (goal <= {FLOOR_GOAL}); "
            f"cpu target {target.cpu:.1f} s, floor {floor.cpu:.1f} s "
            f"(x{target.cpu / floor.cpu:.2f})"
        )
        self.check(
            f"{section} x floor",
            slowdown <= FLOOR_GOAL,
            f"{section}: target/floor time x{slowdown:.2f} (goal <= {FLOOR_GOAL}), cpu "
            f"x{target.cpu / floor.cpu:.2f}",
        )
        return slowdown

    def rounds(
        self, section: str, names: list[str], ds: Dataset, work: Path, repeat: int | None = None
    ) -> dict[str, Run] | None:
        """Rounds (`repeat`, else --repeat) of first syncs of `ds`, each name once, in order.

        Names: `target` and `previous` (each release's dry run on a fresh store), `floor`
        (bare_loop.py) and `baseline` (baseline_target.py, its config in `work`). Every run is
        sampled alike, PSS once a second. Returns the run of least wall time per name, or None
        once a run has failed (reported as `section`'s).
        """
        best: dict[str, Run] = {}
        once_a_second = 10
        releases = {"target": CURRENT, "previous": self.previous}
        commands = {
            "floor": [
                PYTHON,
                str(BENCH_DIR / "bare_loop.py"),
                json.dumps(asdict(normalization_options({}))),
            ],
            "baseline": [
                PYTHON,
                str(BENCH_DIR / "baseline_target.py"),
                "--config",
                str(work / "baseline.json"),
            ],
        }
        for round_ in range(self.args.repeat if repeat is None else repeat):
            for name in names:
                label = f"{name}-{round_}"
                contender = releases.get(name)
                if contender is not None:
                    r = self.dry_sync(label, ds.first, work, contender, pss_every=once_a_second)
                else:
                    r = run(label, commands[name], ds.first, work, pss_every=once_a_second)
                if not r.ok:
                    self.failed(section, r)
                    return None
                say(f"  {name:<9}{fmt_run(r, ds.n)}")
                if contender is not None:
                    report = r.report()
                    if report is None or int(report["added"]) != ds.expected.people:
                        say(f"  target report does not show {ds.expected.people:,} added: {report}")
                if name not in best or r.wall < best[name].wall:
                    best[name] = r
        return best

    def versus_first_sync(self, target: Run, previous: Run) -> None:
        """The table of a first sync's best runs, this release against the previous one."""
        self.versus(
            f"first sync, dry run (best of {self.args.repeat})",
            [
                ("wall s", target.wall, previous.wall, ".2f", True),
                ("cpu s, target tree", target.cpu, previous.cpu, ".1f", True),
                ("peak RSS MB, target", target.maxrss_mb, previous.maxrss_mb, ".1f", True),
                ("tree PSS MB", target.tree_pss_mb, previous.tree_pss_mb, ".1f", True),
            ],
        )

    def first_sync(self) -> None:
        """Section 1's first syncs and its floor, without its baseline.

        For large n (at 10,000,000 the baseline alone takes some 18 minutes): --repeat rounds,
        each the floor, the previous release (with --previous) then this one, best wall of
        each kept.
        """
        ds = self.data(self.n)
        say(
            f"\n== first sync, dry run, everyone new: {ds.n:,} people, "
            f"{'the previous release then this one' if self.previous else 'this release'}"
            f"{'' if self.args.repeat == 1 else f', {self.args.repeat} rounds'} =="
        )
        names = ["floor", *(["previous"] if self.previous else []), "target"]
        best = self.rounds("first-sync", names, ds, self.dir("first-sync"))
        if best is None:
            return
        target = best["target"]
        slowdown = self.versus_floor("first-sync", target, best["floor"])
        self.note(
            f"  first sync: target {rate(ds.n, target.wall):,.0f} rec/s, {target.wall:.1f} s "
            f"(RSS {target.maxrss_mb:.0f} MB, tree PSS {target.tree_pss_mb:.0f} MB, cpu "
            f"{target.cpu:.0f} s)"
        )
        self.line["first_sync"] = (
            f"first_sync={rate(ds.n, target.wall):,.0f} rec/s (x{slowdown:.2f} floor)"
        )
        if "previous" in best:
            self.versus_first_sync(target, best["previous"])

    def dry_sync(
        self,
        label: str,
        data: Path,
        work: Path,
        contender: Contender,
        *,
        pss_every: int = 1,
        **settings: Any,
    ) -> Run:
        """A first sync in dry run on a fresh SQLite store of its own in `work`/`label`."""
        store = work / label
        shutil.rmtree(store, ignore_errors=True)
        store.mkdir(parents=True)
        config = write_config(
            store / "config.json",
            dry_run=True,
            membership_store=str(store / "store.sqlite"),
            dry_run_output=str(store / "dry-run.jsonl"),
            **settings,
        )
        return run_target(label, config, data, work, pss_every=pss_every, contender=contender)

    # 2. API pacing

    def pacing(self) -> None:
        """Real runs against the fake at 200 ms latency and 10 requests/s: window vs the floor.

        One run per count in PACING_REQUESTS against a token-bucket fake (PACING_GOAL_KIND:
        the goals are judged by it), and one per count against a sliding-second fake, the
        strictest (also run by the previous release, with `--previous`): batch_size is
        --batch-size, or smaller so that the count's people fit in --n, and the data set holds
        exactly count x batch people.
        """
        say(
            f"\n== 2. API pacing: fake with {PACING_LATENCY * 1000:.0f} ms latency, "
            f"{PACING_LIMIT} requests/s limit =="
        )
        say(
            f"  the fake refuses a request when {PACING_LIMIT} arrived in the second before it "
            "(a sliding second), the strictest way to count: arrivals with at most "
            f"{PACING_LIMIT} in every sliding second hold at most {PACING_LIMIT} x (floor(L) + "
            f"1) <= {PACING_LIMIT} + {PACING_LIMIT} x L in any L seconds (they fit in floor(L) "
            f"+ 1 sliding seconds), which a full token bucket of {PACING_LIMIT} refilled at "
            f"{PACING_LIMIT}/s admits, and a calendar second is one sliding second: arrivals this "
            "fake refuses none of pass either. Each run's arrivals are replayed through all "
            "three. The goals (window and no rate-limit answer) are judged against a "
            f"{PACING_GOAL_KIND} fake; the sliding-second runs are the stricter check beside them"
        )
        got: dict[str, dict[int, dict[str, Any] | None]] = {}
        for count in PACING_REQUESTS:
            for contender in self.contenders():
                with self.measuring(contender):
                    got.setdefault(contender.name, {})[count] = self._pacing(count)
        if self.previous is not None:
            rows = []
            for count in PACING_REQUESTS:
                mine, theirs = got["current"][count] or {}, got["previous"][count] or {}
                rows += [
                    (
                        f"{count} requests: window s",
                        mine.get("window"),
                        theirs.get("window"),
                        ".2f",
                        True,
                    ),
                    ("  apply (report) s", mine.get("apply"), theirs.get("apply"), ".2f", False),
                    (
                        "  rate-limited answers",
                        mine.get("limited"),
                        theirs.get("limited"),
                        "d",
                        False,
                    ),
                ]
            self.versus("pacing", rows)
        judged = {count: self._pacing(count, kind=PACING_GOAL_KIND) for count in PACING_REQUESTS}
        line = []
        for kind, runs in ((PACING_GOAL_KIND, judged), ("sliding", got["current"])):
            done = {count: figures for count, figures in runs.items() if figures is not None}
            if done:
                ratios = "|".join(f"{figures['ratio']:.3f}" for figures in done.values())
                limited = "|".join(str(figures["limited"]) for figures in done.values())
                counts = "|".join(str(count) for count in done)
                line.append(f"{kind}={ratios}x floor ({counts} requests) rate_limited={limited}")
        self.line["pacing"] = "pacing " + " ".join(line)

    def _pacing(self, count: int, kind: str = "sliding") -> dict[str, Any] | None:
        """One real run that sends `count` mapping requests to a fake counting as `kind`.

        Its figures, None if it failed.
        """
        suffix = "" if kind == "sliding" else f" {kind}"
        name = f"pacing {count}{suffix}"
        batch = min(self.batch, max(1, self.n // count))
        ds = self.data(count * batch)
        work = self.dir(name.replace(" ", "-"))
        latency, limit = PACING_LATENCY, PACING_LIMIT
        with fake_process(
            work, latency=latency, rate_limit=limit, max_batch=10_000, rate_limit_kind=kind
        ) as fake:
            config = write_config(
                work / "config.json",
                api_url=fake.url,
                access_token=TOKEN,
                membership_store=str(work / "store.sqlite"),
                batch_size=batch,
                max_requests_per_second=limit,
            )
            say(
                f"  {self.contender.name}, {count} requests: {ds.n:,} people, fake subprocess at "
                f"{fake.url} (max batch 10000, rate limit counted as: {kind}); target batch_size "
                f"{batch}, max_requests_per_second {limit}, max_parallel_requests default"
            )
            r = run_target(name.replace(" ", "-"), config, ds.first, work, contender=self.contender)
        if not r.ok:
            self.failed(name, r)
            return None
        report = r.report() or {}
        stats = fake.summary.get("stats", {})
        audiences = fake.summary.get("audiences", {})
        mapping = fake.summary.get("mapping", [])
        limited = int(stats.get("rate_limited", -1))
        times = [t for t, _ in mapping]
        ok_requests = sum(1 for _, code in mapping if code == 0)
        floor = ok_requests / limit
        window = (max(times) - min(times) + latency) if times else float("nan")
        ratio = window / floor if floor else float("inf")
        apply = report.get("seconds", float("nan"))
        requests = int(report.get("requests", -1))
        say(
            f"    target: wall {r.wall:.2f} s, cpu {r.cpu:.1f} s, {r.memory()}; its report: "
            f"requests {requests}, apply {apply:.2f} s"
        )
        judged = kind == PACING_GOAL_KIND
        goal = "goal" if judged else f"the goal, against a {PACING_GOAL_KIND} fake,"
        say(
            f"    fake: {stats.get('requests')} requests, {len(mapping)} to segment/mapping/ "
            f"({ok_requests} answered code 0, {count} expected), rate-limited answers "
            f"{limited} ({'goal 0' if judged else 'stricter than the goal'})"
        )
        say(
            f"    sending window (first mapping request's arrival to the last one's answer, "
            f"from the fake's log): {window:.2f} s; floor {ok_requests} requests / {limit} per "
            f"s = {floor:.2f} s; x{ratio:.3f} ({goal} <= {PACING_GOAL})"
        )
        say(f"    busiest sliding 1 s window at the fake: {busiest_second(times)} (limit {limit})")
        replayed = ", ".join(f"{k} {refused(times, limit, k)}" for k in RATE_LIMIT_KINDS)
        say(f"    the same arrivals replayed, refused when counted as: {replayed}")
        ordered = sorted(times)
        if ordered:
            starts = ", ".join(f"{t - ordered[0]:.2f}" for t in ordered[::limit][:30])
            say(
                f"    arrivals 1, {limit + 1}, {2 * limit + 1}, ... (each allowance's first), s "
                f"after the first: {starts}; the last {ordered[-1] - ordered[0]:.2f}"
            )
        spans = [b - a for a, b in zip(ordered, ordered[limit:], strict=False)]
        if spans:
            tightest = f"    tightest {limit + 1} consecutive arrivals: {min(spans):.3f} s apart"
            least = 1 + MARGIN
            if not self.reference and min(spans) < least:
                tightest += (
                    f"; the pacer starts them {least:.3f} s apart at least, so the trip to the "
                    f"fake took up to {least - min(spans):.3f} s longer for one than for the "
                    f"other (MARGIN {MARGIN})"
                )
            elif not self.reference:
                tightest += (
                    f"; the pacer's least is {least:.3f} s, which no {limit + 1} came within"
                )
            say(tightest)
        if limited:
            first = min(times)
            at = [f"{t - first:.2f}" for t, code in mapping if code != 0]
            say(f"    rate-limited arrivals, s after the first request: {', '.join(at[:20])}")
        say(
            f"    for comparison: the report's apply {apply:.2f} s (plan, create audience, send, "
            f"confirm) vs floor {requests} / {limit} = {requests / limit:.2f} s: "
            f"x{apply / (requests / limit):.3f}; whole run x{r.wall / (requests / limit):.2f}"
        )
        expected = ds.expected.by_schema()
        ok_ids = False
        if len(audiences) == 1:
            audience = next(iter(audiences.values()))
            got = audience.get("members", {})
            ok_ids = got == expected and audience.get("distinct") == ds.expected.total_ids
            say(
                f"    audience holds {audience.get('distinct'):,} distinct ids {got}; expected "
                f"{ds.expected.total_ids:,} {expected}: {'exact' if ok_ids else 'MISMATCH'}"
            )
        else:
            say(f"    fake has {len(audiences)} audiences, expected 1: {list(audiences)}")
        self.note(
            f"  {name}: {ok_requests} mapping requests sent in {window:.2f} s (floor "
            f"{floor:.2f} s); apply {apply:.2f} s; run wall {r.wall:.2f} s"
        )
        what = f"{count} requests, {kind} fake"
        if judged:
            self.check(
                name,
                ratio <= PACING_GOAL and ok_requests == count,
                f"{what}: sending window/floor x{ratio:.3f} (goal <= {PACING_GOAL}), "
                f"{ok_requests} sent",
            )
            self.check(
                f"rate limited {count}{suffix}",
                limited == 0,
                f"{what}: rate-limited answers {limited} (goal 0)",
            )
        self.check(f"pacing ids {count}{suffix}", ok_ids, f"{what}: audience ids exact: {ok_ids}")
        return {"ratio": ratio, "limited": limited, "window": window, "apply": apply}

    # 3. incremental cost (and the n-people real run that section 4 reuses)

    def first_real(self, kind: str, n: int, fake: FakeTikTok | None = None) -> dict[str, Any]:
        """A first real sync of n people against a no-latency fake: run, store, RSS."""
        key = (self.contender.name, kind, n)
        if key in self._first_real:
            return self._first_real[key]
        ds = self.data(n)
        work = self.dir(f"real-{kind}-{n}")
        store = self.new_store(kind, f"real_{n}", work)

        def go(fk: FakeTikTok) -> dict[str, Any]:
            config = write_config(
                work / "config.json",
                api_url=fk.url,
                access_token=TOKEN,
                membership_store=store,
                batch_size=self.batch,
                max_requests_per_second=100,
                max_removal_fraction=1.0,
            )
            r = self.target(kind, f"real-{kind}-{n}-first", config, ds.first, work)
            result: dict[str, Any] = {"run": r, "config": config, "store": store, "work": work}
            if r.ok:
                result["store_stats"] = self.store_stats(kind, store)
            return result

        if fake is None:
            with fake_in_process() as own:
                result = go(own)
        else:
            result = go(fake)
        self._first_real[key] = result
        return result

    def incremental(self) -> None:
        """Per store: a first sync, a re-run of the same snapshot, one with 1% changed."""
        say("\n== 3. Incremental cost: real runs, fake without latency, same store ==")
        rounds = self.args.repeat if self.previous is not None else 1
        best: dict[str, dict[str, dict[str, Any]]] = {}  # release, store: figures
        for kind in self.stores:
            say(f"  -- {kind} store")
            for round_ in range(rounds):
                for contender in self.contenders():
                    if self.previous is not None:
                        say(f"  {contender.name} release, round {round_ + 1} of {rounds}")
                    with self.measuring(contender):
                        self._first_real.pop((contender.name, kind, self.n), None)
                        got = self._incremental(kind)
                    if got is not None:
                        keep_best(best.setdefault(contender.name, {}).setdefault(kind, {}), got)
        figures = best.get(CURRENT.name, {})
        f = self.figure
        self.compare(
            [
                ("dry run, fresh store (local part), s", f(figures, "dry"), ".2f"),
                ("first sync, real: wall s", f(figures, "first_wall"), ".2f"),
                ("  requests", f(figures, "first_requests"), "d"),
                ("  apply (report) s", f(figures, "first_apply"), ".2f"),
                ("  wall - apply s", f(figures, "first_local"), ".2f"),
                ("  cpu s, target tree", f(figures, "first_cpu"), ".1f"),
                ("  cpu s, PostgreSQL server", f(figures, "first_server"), ".1f"),
                ("  peak RSS MB, target", f(figures, "first_rss"), ".1f"),
                ("re-run, same snapshot: wall s", f(figures, "rerun_wall"), ".2f"),
                ("  requests at the fake (goal 0)", f(figures, "rerun_sent"), "d"),
                ("  re-run / dry run (goal <= 1)", f(figures, "rerun_vs_dry"), ".2f"),
                ("  cpu s, target tree", f(figures, "rerun_cpu"), ".1f"),
                ("  cpu s, PostgreSQL server", f(figures, "rerun_server"), ".1f"),
                ("  peak RSS MB, target", f(figures, "rerun_rss"), ".1f"),
                ("re-run, 1% changed: wall s", f(figures, "changed_wall"), ".2f"),
                ("  apply (report) s", f(figures, "changed_apply"), ".2f"),
                ("  delete requests (actual/expected)", f(figures, "delete"), "s"),
                ("  add requests (actual/expected)", f(figures, "add"), "s"),
                ("  audience ids afterwards", f(figures, "ids"), "s"),
                ("  cpu s, target tree", f(figures, "changed_cpu"), ".1f"),
                ("  cpu s, PostgreSQL server", f(figures, "changed_server"), ".1f"),
            ]
        )
        self.line["rerun"] = (
            f"first_real={self.pair(figures, 'first_wall', '{:.1f}s')} "
            f"rerun={self.pair(figures, 'rerun_sent', '{}')} requests "
            f"wall {self.pair(figures, 'rerun_wall', '{:.1f}s')} "
            f"dry {self.pair(figures, 'dry', '{:.1f}s')} "
            f"changed=delete {self.pair(figures, 'delete', '{}')} "
            f"add {self.pair(figures, 'add', '{}')}"
        )
        if self.previous is None:
            return
        rows = (
            ("dry run, fresh store, wall s", "dry", ".2f", True),
            ("first sync, real: wall s", "first_wall", ".2f", True),
            ("  cpu s, target tree", "first_cpu", ".1f", True),
            ("  cpu s, PostgreSQL server", "first_server", ".1f", False),
            ("  peak RSS MB, target", "first_rss", ".1f", True),
            ("re-run, same snapshot: wall s", "rerun_wall", ".2f", True),
            ("  cpu s, target tree", "rerun_cpu", ".1f", True),
            ("  peak RSS MB, target", "rerun_rss", ".1f", True),
            ("re-run, 1% changed: wall s", "changed_wall", ".2f", True),
            ("  cpu s, target tree", "changed_cpu", ".1f", True),
        )
        for kind in self.stores:
            mine, theirs = figures.get(kind, {}), best.get("previous", {}).get(kind, {})
            self.versus(
                f"incremental, {kind}" + (f" (best of {rounds})" if rounds > 1 else ""),
                [(label, mine.get(k), theirs.get(k), spec, on) for label, k, spec, on in rows],
            )

    def _incremental(self, kind: str) -> dict[str, Any] | None:
        """Section 3 on one store; its figures (None when a run failed)."""
        ds = self.data(self.n)
        # Its own dry run, minutes before the re-run: section 1's best of three rounds would
        # set one re-run against the machine's fastest minute.
        work = self.dir(f"incremental-dry-{kind}")
        config = write_config(
            work / "config.json",
            dry_run=True,
            membership_store=self.new_store(kind, f"dry_{self.n}", work),
            dry_run_output=str(work / "dry-run.jsonl"),
        )
        r = self.target(kind, f"incremental-dry-{kind}", config, ds.first, work)
        if not r.ok:
            self.failed(f"incremental {kind}", r)
            return None
        local = r.wall
        say(f"  first sync, dry run (its local part): {fmt_run(r, ds.n)}")
        with fake_in_process() as fake:
            first = self.first_real(kind, self.n, fake)
            r1: Run = first["run"]
            if not r1.ok:
                self.failed(f"incremental {kind}", r1)
                return None
            rep1 = r1.report() or {}
            apply1 = rep1.get("seconds", float("nan"))
            say(
                f"  first sync, real: wall {r1.wall:.2f} s, requests "
                f"{int(rep1.get('requests', -1))}, apply {apply1:.2f} s, wall - apply "
                f"{r1.wall - apply1:.2f} s, {r1.cpu_text()}, {r1.memory()} "
                "(max_requests_per_second 100: the fake has no limit)"
            )
            served = fake.stats["requests"]
            fake.reset_log()
            fake.log_bodies = True
            work = first["work"]
            r2 = self.target(kind, f"rerun-same-{kind}", first["config"], ds.first, work)
            if not r2.ok:
                self.failed(f"incremental {kind}", r2)
                return None
            rep2 = r2.report() or {}
            sent2 = fake.stats["requests"] - served
            mapping2 = sum(mapping_actions(fake).values())
            say(
                f"  re-run, same snapshot: wall {r2.wall:.2f} s, report requests "
                f"{int(rep2.get('requests', -1))}, fake saw {sent2} requests ({mapping2} mapping; "
                f"goal 0), {r2.cpu_text()}, {r2.memory()}"
            )
            say(
                f"  re-run wall {r2.wall:.2f} s vs first sync's local part: dry run "
                f"{local:.2f} s (x{r2.wall / local:.2f}), real wall - apply "
                f"{r1.wall - apply1:.2f} s (goal: re-run <= dry run)"
            )
            served = fake.stats["requests"]
            fake.reset_log()
            r3 = self.target(kind, f"rerun-changed-{kind}", first["config"], ds.changed, work)
            if not r3.ok:
                self.failed(f"incremental {kind}", r3)
                return None
            rep3 = r3.report() or {}
            actions = mapping_actions(fake)
            sent3 = fake.stats["requests"] - served
            change = ds.change
            want = {
                "delete": math.ceil(change.delete_rows / self.batch),
                "add": math.ceil(change.add_rows / self.batch),
            }
            say(
                f"  re-run, 1% changed ({change.changed_emails:,} new emails for existing ids, "
                f"{change.new_people:,} new ids): wall {r3.wall:.2f} s, report added "
                f"{int(rep3.get('added', -1)):,} changed {int(rep3.get('changed', -1)):,} "
                f"removed {int(rep3.get('removed', -1)):,}, requests "
                f"{int(rep3.get('requests', -1))} ({sent3} at the fake), apply "
                f"{rep3.get('seconds', float('nan')):.2f} s, {r3.cpu_text()}"
            )
            for action in ("delete", "add"):
                rows = change.delete_rows if action == "delete" else change.add_rows
                say(
                    f"    {action:<6}: {rows:,} people -> expected ceil({rows:,}/{self.batch}) = "
                    f"{want[action]} requests, actual {actions.get(action, 0)}"
                )
            audience = fake.audiences()
            expected = ds.expected_changed.total_ids
            held = audience[0]["member_count"] if len(audience) == 1 else -1
            counts_ok = held == expected
            say(
                f"  fake audience after the change: {held:,} distinct ids, expected "
                f"{expected:,}: {'exact' if counts_ok else 'MISMATCH'}"
            )
        zero = sent2 == 0 and int(rep2.get("requests", -1)) == 0
        per_action = all(actions.get(a, 0) == want[a] for a in want) and set(actions) <= set(want)
        self.note(
            f"  incremental, {kind}: first real {r1.wall:.2f} s, dry {local:.2f} s, re-run "
            f"{r2.wall:.2f} s with {sent2} requests; 1% re-run {r3.wall:.2f} s, delete "
            f"{actions.get('delete', 0)}/{want['delete']} add {actions.get('add', 0)}/{want['add']}"
        )
        self.check(f"rerun zero ({kind})", zero, f"{kind}: re-run requests {sent2} (goal 0)")
        self.check(
            f"rerun time ({kind})",
            r2.wall <= local,
            f"{kind}: re-run {r2.wall:.2f} s <= first local {local:.2f} s",
        )
        self.check(
            f"per action ({kind})",
            per_action,
            f"{kind}: 1% re-run requests per action {dict(actions)}",
        )
        self.check(
            f"changed ids ({kind})",
            counts_ok,
            f"{kind}: audience ids after the 1% change exact: {counts_ok}",
        )
        return {
            "dry": local,
            "first_wall": r1.wall,
            "first_requests": int(rep1.get("requests", -1)),
            "first_apply": apply1,
            "first_local": r1.wall - apply1,
            "first_cpu": r1.cpu,
            "first_server": r1.server_cpu,
            "first_rss": r1.maxrss_mb,
            "rerun_wall": r2.wall,
            "rerun_sent": sent2,
            "rerun_vs_dry": r2.wall / local,
            "rerun_cpu": r2.cpu,
            "rerun_server": r2.server_cpu,
            "rerun_rss": r2.maxrss_mb,
            "changed_wall": r3.wall,
            "changed_apply": rep3.get("seconds", float("nan")),
            "delete": f"{actions.get('delete', 0)}/{want['delete']}",
            "add": f"{actions.get('add', 0)}/{want['add']}",
            "ids": "exact" if counts_ok else "MISMATCH",
            "changed_cpu": r3.cpu,
            "changed_server": r3.server_cpu,
        }

    # 4. memory and disk

    def memory(self) -> None:
        """Per store: peak RSS of real runs at n/10 and n; store bytes per identifier."""
        say("\n== 4. Memory and disk: real runs (dry_run false) against the fake, no latency ==")
        every: dict[str, dict[str, dict[str, Any]]] = {}  # release, store: figures
        for kind in self.stores:
            for contender in self.contenders():
                say(f"  -- {kind} store" + (f", {contender.name} release" if self.previous else ""))
                with self.measuring(contender):
                    got = self._memory(kind)
                if got is not None:
                    every.setdefault(contender.name, {})[kind] = got
        figures = every.get(CURRENT.name, {})
        small_n = max(1, self.n // 10)
        f = self.figure
        self.compare(
            [
                (f"n={small_n:,}: peak RSS MB, target", f(figures, "small_rss"), ".1f"),
                ("  tree PSS MB", f(figures, "small_pss"), ".1f"),
                ("  wall s", f(figures, "small_wall"), ".2f"),
                (f"n={self.n:,}: peak RSS MB, target", f(figures, "big_rss"), ".1f"),
                ("  tree PSS MB", f(figures, "big_pss"), ".1f"),
                ("  wall s", f(figures, "big_wall"), ".2f"),
                ("peak RSS n / n/10 (goal <= 1.5)", f(figures, "ratio"), ".2f"),
                ("tree PSS n / n/10 (goal <= 1.5)", f(figures, "tree_ratio"), ".2f"),
                (f"store at n={self.n:,}: MB", f(figures, "store_mb"), ".1f"),
                ("  identifiers stored", f(figures, "ids"), ",d"),
                ("  bytes per identifier (goal <= 150)", f(figures, "per_id"), ".1f"),
            ]
        )
        self.line["memory"] = (
            f"rss_ratio={self.pair(figures, 'ratio', '{:.2f}')} "
            f"tree_pss_ratio={self.pair(figures, 'tree_ratio', '{:.2f}')} "
            f"bytes_per_id={self.pair(figures, 'per_id', '{:.0f}')}"
        )
        if self.previous is None:
            return
        for kind in self.stores:
            mine, theirs = figures.get(kind, {}), every.get("previous", {}).get(kind, {})
            rows = (
                (f"n={small_n:,}: peak RSS MB, target", "small_rss", ".1f", True),
                ("  tree PSS MB", "small_pss", ".1f", True),
                (f"n={self.n:,}: peak RSS MB, target", "big_rss", ".1f", True),
                ("  tree PSS MB", "big_pss", ".1f", True),
                ("store: bytes per identifier", "per_id", ".1f", True),
                ("  identifiers stored", "ids", ",d", False),
            )
            self.versus(
                f"memory, {kind}",
                [(label, mine.get(k), theirs.get(k), spec, on) for label, k, spec, on in rows],
            )

    def _memory(self, kind: str) -> dict[str, Any] | None:
        """Section 4 on one store; its figures (None when a run failed)."""
        small_n = max(1, self.n // 10)
        rows = []
        for n in (small_n, self.n):
            result = self.first_real(kind, n)
            r: Run = result["run"]
            if not r.ok:
                self.failed(f"memory {kind}", r)
                return None
            size, ids, how = result["store_stats"]
            rows.append((n, r, size, ids))
            say(
                f"  n={n:>10,}: {r.memory()}, wall {r.wall:.2f} s, {r.cpu_text()}, store "
                f"{size / 1e6:,.1f} MB for {ids:,} ids ({how}) = {size / max(ids, 1):.1f} B/id"
            )
        (_, small, _, _), (_, big, size, ids) = rows
        ratio = big.maxrss_mb / small.maxrss_mb
        tree_ratio = big.tree_pss_mb / small.tree_pss_mb
        per_id = size / max(ids, 1)
        expected_ids = self.data(self.n).expected.total_ids
        where = (
            "store file incl. -wal after the run; -shm excluded"
            if kind == "sqlite"
            else "pg_total_relation_size of the schema's tables after the run; WAL excluded"
        )
        say(
            f"  peak at n / peak at n/10: RSS of the target process x{ratio:.2f} (goal <= 1.5); "
            f"PSS of its whole process tree (workers included) x{tree_ratio:.2f}"
        )
        say(
            f"  store: {per_id:.1f} bytes per identifier (goal <= 150); {ids:,} stored, "
            f"{expected_ids:,} expected ({where})"
        )
        self.note(
            f"  memory, {kind}: peak RSS {small.maxrss_mb:.0f} MB at {small_n:,}, "
            f"{big.maxrss_mb:.0f} MB at {self.n:,} (tree PSS {small.tree_pss_mb:.0f} / "
            f"{big.tree_pss_mb:.0f} MB); store {size / 1e6:.1f} MB for {ids:,} ids"
        )
        self.check(
            f"rss ({kind})", ratio <= 1.5, f"{kind}: peak RSS ratio x{ratio:.2f} (goal <= 1.5)"
        )
        self.check(
            f"tree pss ({kind})",
            tree_ratio <= 1.5,
            f"{kind}: process-tree PSS ratio x{tree_ratio:.2f} (goal <= 1.5)",
        )
        self.check(
            f"bytes/id ({kind})", per_id <= 150, f"{kind}: {per_id:.1f} bytes per id (goal <= 150)"
        )
        return {
            "small_rss": small.maxrss_mb,
            "small_pss": small.tree_pss_mb,
            "small_wall": small.wall,
            "big_rss": big.maxrss_mb,
            "big_pss": big.tree_pss_mb,
            "big_wall": big.wall,
            "ratio": ratio,
            "tree_ratio": tree_ratio,
            "store_mb": size / 1e6,
            "ids": ids,
            "per_id": per_id,
        }

    # 5. a composed audience

    def composed(self) -> None:
        """A composed audience's first sync (dry run) against a simple one of n people.

        Rounds of --repeat, each the simple sync then the composed one, best of each kept;
        then, with --previous, the composed config once on the previous release, which has
        no composed audiences and must refuse it with one line.
        """
        ds = self.data(self.n)
        comp = composed_dataset(self.n, self.args.seed, self.cache)
        a, b = COMPOSED_STREAMS
        spec = {
            "audience_name": "Composed",
            "streams": [a, b],
            "exclude_streams": [COMPOSED_EXCLUDE],
        }
        say(
            f"\n== 5. Composed audience: {json.dumps(spec)}, first sync, dry run, against a "
            f"simple sync of {ds.n:,} people =="
        )
        say(
            f"  data: {comp.path.name} ({comp.path.stat().st_size / 1e6:,.1f} MB): streams {a} "
            f"and {b} of {ds.n // 2:,} people each (those of the simple sync), {COMPOSED_EXCLUDE} "
            f"of {comp.records - ds.n:,} people ({comp.excluded:,} of them in {a} or {b}); "
            f"expected members {comp.expected.people:,}, ids {comp.expected.by_schema()}"
        )
        work = self.dir("composed")
        settings = {"audiences": {"composed": spec}}
        best: dict[str, Run] = {}
        for round_ in range(self.args.repeat):
            for name in ("simple", "composed"):
                simple = name == "simple"
                data, records = (ds.first, ds.n) if simple else (comp.path, comp.records)
                label = f"{name}-{round_}"
                r = self.dry_sync(label, data, work, CURRENT, **({} if simple else settings))
                if not r.ok:
                    self.refused(name, r)
                    return
                say(f"  {name:<9}{fmt_run(r, records)}")
                if name == "composed" and round_ == 0:
                    self.composed_membership(comp, work / label / "dry-run.jsonl", r)
                if name not in best or r.wall < best[name].wall:
                    best[name] = r
        ratio = best["composed"].wall / best["simple"].wall
        say(
            f"  composed vs simple: x{ratio:.2f} the time (goal <= {COMPOSED_GOAL})"
            f"{'' if self.args.repeat == 1 else f'; best of {self.args.repeat}'}"
        )
        self.check(
            "composed time",
            ratio <= COMPOSED_GOAL,
            f"composed first sync x{ratio:.2f} a simple one of {ds.n:,} (goal <= {COMPOSED_GOAL})",
        )
        self.line["composed"] = f"composed=x{ratio:.2f} simple"
        self.composed_merged(comp, work)
        if self.previous is not None:
            r = self.dry_sync("composed-previous", comp.path, work, self.previous, **settings)
            why = error_line(r)
            say(f"  previous release on the composed config: exit {r.returncode}: {why}")
            self.check(
                "composed refused by the previous release",
                not r.ok,
                f"the previous release refuses the composed config (exit {r.returncode})",
            )

    def composed_merged(self, comp: Composed, work: Path) -> None:
        """Two composed audiences sharing people, one dry run: requests merged and not.

        `union` is a and b less x, `left` is a less x: everyone of `left` is in `union` too.
        Merged, such a person is one row naming both audiences. Without merging each
        audience's rows would go in requests of their own: the sum of each audience's
        batches, counted from the rows that name it.
        """
        a, b = COMPOSED_STREAMS
        audiences = {
            "union": {"audience_name": "Union", "streams": [a, b]},
            "left": {"audience_name": "Left", "streams": [a]},
        }
        for spec in audiences.values():
            spec["exclude_streams"] = [COMPOSED_EXCLUDE]
        r = self.dry_sync(
            "merged", comp.path, work, CURRENT, audiences=audiences, batch_size=self.batch
        )
        if not r.ok:
            self.refused("merged", r)
            return
        requests, rows = 0, 0
        per_audience: Counter[str] = Counter()
        with (work / "merged" / "dry-run.jsonl").open() as lines:
            for line in lines:
                request = json.loads(line)
                if request.get("path") != "segment/mapping/":
                    continue
                requests += 1
                for row in request["body"]["batch_data"]:
                    rows += 1
                    per_audience.update({a for entry in row for a in entry.get("audience_ids", ())})
        alone = sum(-(-count // self.batch) for count in per_audience.values())
        union = per_audience.get("dry-run:Union", 0)
        exact = union == comp.expected.people
        each = ", ".join(f"{k} {v:,}" for k, v in sorted(per_audience.items()))
        say(
            f"  merged sends: {json.dumps(audiences)}, batch_size {self.batch:,}: {requests} "
            f"mapping requests of {rows:,} rows; one audience at a time {alone} requests of "
            f"{sum(per_audience.values()):,} rows ({each}): {alone - requests} fewer "
            f"({(alone - requests) / max(alone, 1):.0%}); Union rows {union:,}: "
            f"{'exact' if exact else 'MISMATCH'} ({fmt_run(r, comp.records)})"
        )
        self.check(
            "merged sends",
            exact and requests < alone,
            f"two composed audiences sharing people: {requests} requests merged, {alone} "
            "one audience at a time",
        )
        self.line["composed"] += f" merged={requests}/{alone} requests"

    def refused(self, name: str, r: Run) -> None:
        """One line for a scenario run that failed, with the target's own error line."""
        say(f"  {name}: FAILED (exit {r.returncode}): {error_line(r)}")
        self.summary.append(f"  [FAILED] composed: {name} run exit {r.returncode}: {error_line(r)}")
        self.verdicts.append((f"composed section: {name} run", False))

    def composed_membership(self, comp: Composed, dry_run: Path, r: Run) -> None:
        """Check the composed dry run: members reported, ids per type in its add requests."""
        report = r.report() or {}
        added = int(report.get("added", -1))
        sent: Counter[str] = Counter()
        with dry_run.open() as requests:
            for line in requests:
                request = json.loads(line)
                body = request.get("body") or {}
                if request.get("path") != "segment/mapping/" or body.get("action") != "add":
                    continue
                for row in body["batch_data"]:
                    sent.update(k for k, slot in zip(body["id_schema"], row, strict=True) if slot)
        exact = added == comp.expected.people and dict(sent) == comp.expected.by_schema()
        say(
            f"  composed: report added {added:,} (expected {comp.expected.people:,}); ids in its "
            f"add requests {dict(sent)}: {'exact' if exact else 'MISMATCH'}"
        )
        self.check(
            "composed members",
            exact,
            f"composed audience holds exactly a and b less x: {exact}",
        )

    # optional: profile

    def profile(self) -> None:
        """Where the CPU of a dry run goes: py-spy samples of the whole process tree, by step.

        The target and the floor run once each, unprofiled, for their CPU seconds; then the
        target runs under py-spy (`--subprocesses`: its worker processes too), and each
        step's share of the samples is set against the unprofiled run's CPU (see `step_of`).
        Without py-spy, a cProfile listing of the main process on min(n, 100k) people.
        """
        spy = shutil.which("py-spy") or str(Path(PYTHON).parent / "py-spy")
        if not Path(spy).exists():
            say("\n  py-spy is not installed (pip install py-spy): a cProfile listing instead")
            self.cprofile()
            return
        ds = self.data(self.n)
        say(f"\n== profile: where the CPU of a dry run goes, n={ds.n:,} (py-spy, every process) ==")
        work = self.dir("profile")
        best = self.rounds("profile", ["floor", "target"], ds, work, repeat=1)
        if best is None:
            return
        floor, target = best["floor"], best["target"]
        store = work / "spied"
        shutil.rmtree(store, ignore_errors=True)
        store.mkdir()
        config = write_config(
            store / "config.json",
            dry_run=True,
            membership_store=str(store / "store.sqlite"),
            dry_run_output=str(store / "dry-run.jsonl"),
        )
        out = work / "py-spy.txt"
        spied = [spy, "record", "--subprocesses", "--nonblocking", "--format", "raw"]
        spied += ["--rate", str(SPY_RATE), "--output", str(out), "--"]
        r = run("spied", [*spied, *CURRENT.command, "--config", str(config)], ds.first, work)
        if not r.ok or not out.exists():
            self.failed("profile", r)
            return
        steps: Counter[str] = Counter()
        workers: Counter[str] = Counter()
        for line in out.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            frames = stack.split(";")
            step = step_of(frames)
            steps[step] += int(count)
            if sum(frame.startswith("process ") for frame in frames) > 1:
                workers[step] += int(count)
        waiting = steps.pop(WAITING, 0)
        workers.pop(WAITING, 0)
        total = sum(steps.values())
        say(
            f"  unprofiled: target cpu {target.cpu:.1f} s (wall {target.wall:.1f} s), floor "
            f"cpu {floor.cpu:.1f} s (wall {floor.wall:.1f} s); {total:,} samples at "
            f"{SPY_RATE}/s under py-spy ({waiting:,} more of threads waiting), each step's "
            "share of them times the target's cpu:"
        )
        say(f"  {'step':<28}{'cpu s':>8}{'share':>8}{'in workers':>12}")
        for step in (*STEPS, *sorted(set(steps) - set(STEPS))):
            if steps[step]:
                share = steps[step] / total
                say(
                    f"  {step:<28}{share * target.cpu:>8.1f}{share:>8.1%}"
                    f"{workers[step] / steps[step]:>12.0%}"
                )
        floor_steps = sum(steps[step] for step in FLOOR_STEPS) / total * target.cpu
        say(
            f"  the floor's steps ({', '.join(FLOOR_STEPS)}): {floor_steps:.1f} s in the target, "
            f"{floor.cpu:.1f} s in the floor; the rest: {target.cpu - floor_steps:.1f} s"
        )
        if self.args.keep:
            say(f"  (samples kept at {out})")

    def cprofile(self) -> None:
        """cProfile of the real target (dry run) on up to 100k people: top 15 by cumulative."""
        n = min(self.n, PROFILE_PEOPLE)
        say(f"\n== profile: cProfile of the target, dry run, n={n:,} (main process only) ==")
        ds = self.data(n)
        work = self.dir("profile")
        config = write_config(
            work / "config.json",
            dry_run=True,
            membership_store=str(work / "store.sqlite"),
            dry_run_output=str(work / "dry-run.jsonl"),
        )
        out = work / "target.prof"
        cmd = [PYTHON, "-m", "cProfile", "-o", str(out), TARGET, "--config", str(config)]
        r = run("profile", cmd, ds.first, work, env=clean_env())
        if not r.ok:
            self.failed("profile", r)
            return
        say(f"  {fmt_run(r, ds.n)} (under cProfile)")
        for order in ("cumulative", "tottime"):
            buffer = io.StringIO()
            stats = pstats.Stats(str(out), stream=buffer)
            stats.sort_stats(order).print_stats(15)
            text = buffer.getvalue()
            say(f"  top 15 by {order}:")
            for line in text[text.find("   ncalls") :].rstrip().splitlines():
                for prefix in PATH_PREFIXES:
                    line = line.replace(prefix, "")
                say("  " + line)
        if self.args.keep:
            say(f"  (profile kept at {out})")


# The profile's steps, in the order printed; a sample's step is found by `step_of`.
STEPS = (
    "reading",
    "parsing",
    "normalising",
    "hashing",
    "hand-off to workers",
    "staging",
    "planning",
    "confirming",
    "writing requests",
    "start-up (imports)",
    "SDK and other",
)
FLOOR_STEPS = ("parsing", "normalising", "hashing")  # what bare_loop.py does too
SPY_RATE = 100  # py-spy samples a second
_PACKAGE = "target_tiktok_audiences/"
# (file, functions or () for any of its functions, step): a frame's step. Files without a rule
# (the store's backends, the standard library but for the two below) pass to the frame outside.
_FRAME_STEPS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    (_PACKAGE + "identifiers/", (), "normalising"),
    (_PACKAGE + "reader.py", ("parse_line", "_parse_slowly", "long_number"), "parsing"),
    (_PACKAGE + "reader.py", ("record_of", "require_keys"), "parsing"),
    (_PACKAGE + "reader.py", (), "reading"),
    (_PACKAGE + "people.py", ("hash_lines",), "parsing"),
    (_PACKAGE + "people.py", ("PeopleQueue._take", "PeopleQueue.drain"), "hand-off to workers"),
    (_PACKAGE + "people.py", ("PeopleQueue.",), "reading"),
    (_PACKAGE + "people.py", (), "normalising"),
    (_PACKAGE + "store/staged.py", ("Staged.", "Staging.stage", "Staging._staging"), "staging"),
    (_PACKAGE + "store/confirm.py", (), "confirming"),
    (_PACKAGE + "store/sqlite.py", (), ""),
    (_PACKAGE + "store/backend.py", (), ""),
    (_PACKAGE + "store/connection.py", (), ""),
    (_PACKAGE + "store/", (), "planning"),
    (_PACKAGE + "sinks.py", ("AudienceSink._stage",), "staging"),
    (_PACKAGE + "sinks.py", ("AudienceSink.process_",), "reading"),
    (_PACKAGE + "target.py", ("TargetTikTokAudiences._take_record_lines",), "reading"),
    (_PACKAGE + "target.py", ("TargetTikTokAudiences._process_record",), "reading"),
    (_PACKAGE + "sync.py", (), "planning"),
    (_PACKAGE + "composed.py", (), "planning"),
    (_PACKAGE + "tiktok/", (), "writing requests"),
    (_PACKAGE + "workers.py", (), "hand-off to workers"),
    ("multiprocessing/", (), "hand-off to workers"),
    ("concurrent/", (), "hand-off to workers"),
)
# A thread that waits, sampled while it is still on its way to sleep (a loaded machine makes
# py-spy take such a thread for a busy one): no step's CPU.
WAITING = "waiting"
_WAITING = ("_PollLikeSelector.select (selectors.py", "Condition.wait (threading.py")
_FRAME_RE = re.compile(r"(?P<function>\S+) \((?P<file>[^:]+):(?P<line>\d+)\)$")


def step_of(frames: list[str]) -> str:
    """The step of one py-spy stack (outermost frame first).

    Any frame in the import machinery makes it start-up. Otherwise frames are read from the
    innermost out: a package line that calls sha256 is hashing, else the first frame with a
    rule in `_FRAME_STEPS` decides; C code (orjson, hashlib, SQLite) counts in the line of
    Python that called it. A stack no rule names is "SDK and other".
    """
    if any("<frozen importlib" in frame for frame in frames):
        return "start-up (imports)"
    if frames and frames[-1].startswith(_WAITING):
        return WAITING
    for frame in reversed(frames):
        match = _FRAME_RE.search(frame)
        if match is None:
            continue
        file, function = match["file"], match["function"]
        if file.startswith(_PACKAGE):
            source = linecache.getline(str(REPO / file), int(match["line"]))
            if "sha256(" in source:
                return "hashing"
        for prefix, functions, step in _FRAME_STEPS:
            if file.startswith(prefix) and (
                not functions or any(function.startswith(f) for f in functions)
            ):
                if step:
                    return step
                break
    return "SDK and other"


def code_facts(package: Path, checkout: Path, name: str = "code") -> str:
    """Which code is measured: git commit, local changes, a digest of the package sources."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    try:
        head = subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(checkout), "status", "--porcelain", "target_tiktok_audiences"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.splitlines()
    except OSError:
        head, dirty = "?", []
    return (
        f"{name}: {package} (sources sha256 {digest.hexdigest()[:12]}), git {head or '?'}"
        f"{f' + {len(dirty)} uncommitted package file(s)' if dirty else ''}"
    )


def proven(contender: Contender, package: Path, checkout: Path, name: str) -> bool:
    """Print which code a contender's runs measure; False if they would import another package.

    A venv installed from another checkout would otherwise measure that checkout's code under
    this one's name.
    """
    imported = imported_package(contender)
    if not Path(imported).is_relative_to(package.resolve()):
        fix = ": run with this checkout's venv (pip install -e), or --freeze"
        say(
            f"{name}: its runs would import {imported}, not {package}"
            + (fix if contender is CURRENT else "")
        )
        return False
    say(code_facts(package, checkout, name) + f"; its runs import {imported}")
    return True


def freeze(where: Path) -> None:
    """Copy the package and the fake to `where` and make every subprocess import that copy."""
    global FAKE_SCRIPT
    if where.exists():
        shutil.rmtree(where)
    shutil.copytree(
        REPO / "target_tiktok_audiences",
        where / "target_tiktok_audiences",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    FAKE_SCRIPT = where / "fake_tiktok.py"
    shutil.copy2(REPO / "tests" / "fake_tiktok.py", FAKE_SCRIPT)
    # PYTHONPATH comes before the editable install's finder, in the target and in its workers.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        x for x in (str(where), os.environ.get("PYTHONPATH")) if x
    )
    os.environ["BENCH_PACKAGE_DIR"] = str(where / "target_tiktok_audiences")
    imported = imported_package(CURRENT)
    say(f"frozen: package and fake copied to {where}; subprocesses import {imported}")


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the chosen sections, print the summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="people (default 1,000,000)")
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections: {', '.join(SECTIONS + OPTIONAL_SECTIONS)}",
    )
    parser.add_argument("--keep", type=Path, help="work in DIR and keep it (stores, logs)")
    parser.add_argument(
        "--freeze",
        action="store_true",
        help="copy the package and the fake into the work dir first and run that copy "
        "(edits made to the checkout during a long run then do not mix into it)",
    )
    parser.add_argument(
        "--stores",
        default=",".join(STORES),
        help="comma-separated membership stores that sections 3 and 4 run on, side by side: "
        f"{', '.join(STORES)} (default both; PostgreSQL is tests/postgres.py's throwaway server)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds of sections 1 and 5 and first-sync, and of 3 with --previous (best kept)",
    )
    parser.add_argument(
        "--previous",
        type=Path,
        metavar="PATH",
        help="a checkout of the previous release: every section also runs its target, on the "
        f"same data, and prints each figure for both (goal: this <= {PREVIOUS_GOAL}x previous)",
    )
    parser.add_argument("--batch-size", type=int, default=5000, help="target batch_size")
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(tempfile.gettempdir()) / "tiktok-audiences-bench-data",
        help="where generated Singer files are cached",
    )
    args = parser.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(SECTIONS + OPTIONAL_SECTIONS)
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    if not stores or set(stores) - set(STORES) or len(set(stores)) != len(stores):
        parser.error(f"--stores: one or both of {', '.join(STORES)}, got {args.stores!r}")
    stores = [s for s in STORES if s in stores]  # sqlite first: columns in one order
    if args.previous is not None and not (args.previous / "target_tiktok_audiences").is_dir():
        parser.error(f"--previous {args.previous}: no target_tiktok_audiences package there")
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        work = args.keep.resolve()
    else:
        work = Path(tempfile.mkdtemp(prefix="tiktok-audiences-bench-"))
    started = time.monotonic()
    say(
        f"target-tiktok-audiences benchmark: n={args.n:,}, sections {','.join(only)}, "
        f"stores {','.join(stores)}"
    )
    for fact in machine_facts():
        say(fact)
    say(f"work dir {work}{' (kept)' if args.keep else ' (removed at the end)'}; data {args.cache}")
    if args.freeze:
        freeze(work / "frozen")
    package = Path(os.environ.get("BENCH_PACKAGE_DIR", REPO / "target_tiktok_audiences"))
    if not proven(CURRENT, package, REPO, "code"):
        return 2
    previous: Contender | None = None
    if args.previous is not None:
        previous = previous_contender(args.previous)
        package = args.previous.resolve() / "target_tiktok_audiences"
        if not proven(previous, package, args.previous, "previous"):
            return 2
    # SIGTERM unwinds like Ctrl-C, so the finally below still stops the PostgreSQL server.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    postgres: BenchPostgres | None = None
    try:
        if "postgresql" in stores and set(only) & set(STORE_SECTIONS):
            from pgstore import BenchPostgres, PostgresUnavailable

            postgres = BenchPostgres()
            try:
                postgres.start()
            except PostgresUnavailable as exc:
                say(f"PostgreSQL server did not start: {exc}")
                return 2
            say(postgres.facts())
        bench = Bench(args, work, args.cache, stores, postgres, previous)
        bench.data(args.n)
        for section in (*SECTIONS, *OPTIONAL_SECTIONS):
            if section in only:
                getattr(bench, section.replace("-", "_"))()
    finally:
        if postgres is not None:
            postgres.stop()
            say(f"PostgreSQL server stopped, {postgres.root} removed")
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    elapsed = time.monotonic() - started
    say(
        f"\n== Summary (n={args.n:,}, {elapsed / 60:.1f} min, load avg now "
        f"{os.getloadavg()[0]:.2f}) =="
    )
    for line in bench.summary:
        say(line)
    missed = [name for name, met in bench.verdicts if not met]
    say(
        f"  goals met {len(bench.verdicts) - len(missed)}/{len(bench.verdicts)}"
        + (f"; missed: {', '.join(missed)}" if missed else "")
    )
    parts = [f"SUMMARY n={args.n}"]
    if set(only) & set(STORE_SECTIONS):
        parts.append(f"stores={'|'.join(stores)}")
    parts += [
        bench.line[k]
        for k in (
            "target",
            "baseline",
            "floor",
            "pacing",
            "rerun",
            "memory",
            "composed",
            "first_sync",
        )
        if k in bench.line
    ]
    if bench.ratios:
        parts.append(f"vs_previous=max x{max(bench.ratios):.3f} of {len(bench.ratios)} figures")
    say(" ".join(parts))
    return 0 if not missed else 1


if __name__ == "__main__":
    sys.exit(main())
