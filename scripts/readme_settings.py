"""Regenerate README.md's generated blocks from `target-tiktok-audiences --about --format=markdown`.

Each block sits between `<!-- about:NAME -->` and `<!-- /about:NAME -->` and holds the body of
the `## NAME` section of that output (`Capabilities`, `Settings`), so the README states exactly
what the installed code says. Run it after changing a setting:

    .venv/bin/python scripts/readme_settings.py            # rewrite the blocks
    .venv/bin/python scripts/readme_settings.py --check    # exit 1 when a block is stale

Two changes make the text show on GitHub as it reads in a terminal (see `present`).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = ("Capabilities", "Settings")
COMMAND = "target-tiktok-audiences"
FIX = "run `.venv/bin/python scripts/readme_settings.py` and commit README.md"


class ReadmeError(Exception):
    """The README or `--about` cannot be read as this script expects."""


def about_markdown() -> str:
    """The installed target's `--about --format=markdown`, from the scripts beside this Python."""
    script = Path(sysconfig.get_path("scripts")) / COMMAND
    if not script.is_file():
        raise ReadmeError(f"{script} not found: install the package first (pip install -e .)")
    proc = subprocess.run(
        [str(script), "--about", "--format=markdown"], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise ReadmeError(f"{COMMAND} --about failed (exit {proc.returncode}): {proc.stderr}")
    return proc.stdout


def sections(markdown: str) -> dict[str, str]:
    """`## NAME` heading → its body, stripped, for every second-level section."""
    parts = re.split(r"^## (.+)$", markdown, flags=re.MULTILINE)
    return {name.strip(): body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def escape_tags(text: str) -> str:
    """`<` and `>` outside backtick code spans as entities, so that GitHub shows them."""
    pieces = re.split(r"(`[^`\n]*`)", text)
    return "".join(
        piece if piece.startswith("`") else piece.replace("<", "&lt;").replace(">", "&gt;")
        for piece in pieces
    )


def present(section: str) -> str:
    """A section as the README shows it: tags escaped, each table row's first cell as code.

    The first cell of a settings row is a setting's name (`stream_maps.__else__`), which
    Markdown would otherwise read as emphasis; a table's header row keeps its plain words.
    """
    lines = section.splitlines()
    shown = []
    for number, line in enumerate(lines):
        following = lines[number + 1] if number + 1 < len(lines) else ""
        is_row = line.startswith("| ") and not following.startswith("|:")
        if is_row:
            first, rest = line[2:].split(" |", 1)
            line = f"| `{first}` |{escape_tags(rest)}"
        else:
            line = escape_tags(line)
        shown.append(line)
    return "\n".join(shown)


def _fill(readme: str, name: str, body: str) -> str:
    """`readme` with the one block `name` holding `body`; ReadmeError unless exactly one."""
    block = re.compile(rf"(<!-- about:{name} -->\n).*?(<!-- /about:{name} -->)", flags=re.DOTALL)
    filled, count = block.subn(lambda m: m[1] + body + m[2], readme)
    if count != 1:
        raise ReadmeError(
            f"README.md needs exactly one `<!-- about:{name} -->` ... "
            f"`<!-- /about:{name} -->` block, found {count}"
        )
    return filled


def render(readme: str, about: str) -> str:
    """`readme` with every block replaced by its section of `about`.

    Raises ReadmeError when a block's markers or its section are missing.
    """
    found = sections(about)
    for name in BLOCKS:
        if name not in found:
            raise ReadmeError(f"`{COMMAND} --about --format=markdown` has no `## {name}` section")
        readme = _fill(readme, name, present(found[name]) + "\n")
    return readme


def main(argv: list[str] | None = None) -> int:
    """Rewrite the README's blocks, or with `--check` say whether they are stale."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a block is stale")
    args = parser.parse_args(argv)
    try:
        current = README.read_text(encoding="utf-8")
        fresh = render(current, about_markdown())
    except ReadmeError as exc:
        print(f"readme_settings: {exc}", file=sys.stderr)
        return 1
    if fresh == current:
        return 0
    if args.check:
        print(f"readme_settings: README.md's generated blocks are stale: {FIX}", file=sys.stderr)
        return 1
    README.write_text(fresh, encoding="utf-8")
    print("readme_settings: README.md updated", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
