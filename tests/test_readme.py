"""README.md states what the code says: its generated tables and its module table stay true."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "readme_settings.py"
PACKAGE = REPO / "target_tiktok_audiences"
TARGET = Path(sys.executable).parent / "target-tiktok-audiences"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("readme_settings", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _section(readme: str, heading: str) -> str:
    start = readme.index(f"\n{heading}\n")
    end = readme.find("\n#", start + len(heading) + 2)
    return readme[start : end if end != -1 else None]


def test_generated_blocks_match_about() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr


def test_a_stale_block_is_rewritten_from_about() -> None:
    script = _load_script()
    about = "# `t`\n\n## Capabilities\n\n- `about`\n\n## Settings\n\n| Setting | Default |\n"
    about += "|:--|:--|\n| stream_maps.__else__ | '<name> (rebuilt DATE)' |\n"
    stale = (
        "intro\n<!-- about:Capabilities -->\n- `old`\n<!-- /about:Capabilities -->\n"
        "<!-- about:Settings -->\n| old |\n<!-- /about:Settings -->\nend\n"
    )
    assert script.render(stale, about) == (
        "intro\n<!-- about:Capabilities -->\n- `about`\n<!-- /about:Capabilities -->\n"
        "<!-- about:Settings -->\n| Setting | Default |\n|:--|:--|\n"
        "| `stream_maps.__else__` | '&lt;name&gt; (rebuilt DATE)' |\n<!-- /about:Settings -->\n"
        "end\n"
    )


def test_a_readme_without_the_markers_is_refused() -> None:
    script = _load_script()
    about = "## Capabilities\n\n- `about`\n\n## Settings\n\n| Setting |\n"
    with pytest.raises(script.ReadmeError, match="about:Capabilities"):
        script.render("no markers here\n", about)


def _modules() -> set[str]:
    """The package's modules, subpackages' as `package/module.py`."""
    return {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")}


def test_every_module_is_in_the_module_table() -> None:
    table = _section(REPO.joinpath("README.md").read_text(encoding="utf-8"), "### Modules")
    listed = set(re.findall(r"^\| `([a-z_/]+\.py)` \|", table, flags=re.MULTILINE))
    package = {module for module in _modules() if not module.endswith("__init__.py")}
    assert listed == package, (
        f"README.md's module table lacks {sorted(package - listed)} "
        f"and lists {sorted(listed - package)}, which are not in the package"
    )


def test_the_behaviour_table_names_only_real_modules() -> None:
    readme = REPO.joinpath("README.md").read_text(encoding="utf-8")
    table = _section(readme, "### Where each behaviour lives")
    named = set(re.findall(r"`([a-z_/]+\.py)`", table))
    package = _modules()
    assert named, "README.md has no behaviour → module table"
    assert named <= package, sorted(named - package)


def test_every_link_within_the_readme_finds_its_heading() -> None:
    readme = REPO.joinpath("README.md").read_text(encoding="utf-8")
    prose = re.sub(r"^```.*?^```", "", readme, flags=re.MULTILINE | re.DOTALL)
    headings = re.findall(r"^#+ (.+)$", prose, flags=re.MULTILINE)
    anchors = {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}
    links = set(re.findall(r"\]\(#([^)]+)\)", prose))
    assert links, "README.md links none of its sections"
    assert links <= anchors, sorted(links - anchors)


def _message(log_line: str) -> str:
    """A log line's message, without the timing that ends a report line."""
    return re.sub(r", [0-9.]+ s$", "", log_line.split(" | ", 3)[-1])


def test_the_first_command_prints_what_the_readme_shows(tmp_path: Path) -> None:
    """The bundled example, run as the README's first command runs it, prints the README's text."""
    intro = REPO.joinpath("README.md").read_text(encoding="utf-8").split("\n## ", 1)[0]
    blocks = re.findall(r"^```\w*\n(.*?)^```$", intro, flags=re.MULTILINE | re.DOTALL)
    [head] = [block for block in blocks if block.startswith('{"method"')]
    [log] = [block for block in blocks if "| Audience " in block]
    proc = subprocess.run(
        [
            str(TARGET),
            "--config",
            str(REPO / "examples" / "config.dry-run.json"),
            "--input",
            str(REPO / "examples" / "contacts.singer"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout == ""
    printed = [_message(line) for line in proc.stderr.splitlines() if "| Audience " in line]
    assert printed == [_message(line) for line in log.splitlines() if "| Audience " in line]
    dry_run = json.loads(REPO.joinpath("examples", "config.dry-run.json").read_text())
    assert tmp_path.joinpath(dry_run["dry_run_output"]).read_text()[:700] + "\n" == head
