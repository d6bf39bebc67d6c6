"""The package's shape, read from its source: no import circle, no long module, tiktok/ apart.

Pure and fast: the modules are parsed with `ast`, never imported. An import counts wherever it
stands (a function's lazy import too) except under `if TYPE_CHECKING:`, which never runs. A
package's `__init__.py` is the package: `from pkg import name` is an edge to `pkg`, or to
`pkg.name` when that is a module. Importing `pkg.mod` is no edge to `pkg` itself: Python runs
`pkg/__init__.py` first, but a circle through it only matters when a name is taken from it, and
that is an edge of its own.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import target_tiktok_audiences

PACKAGE = Path(target_tiktok_audiences.__file__).parent
MAX_LINES = 400
# What tiktok/ never loads, by the first part of a module's name below the package; every
# store_* module is the store's too.
OUTSIDE_TIKTOK = (
    "store",
    "settings",
    "sinks",
    "target",
    "sync",
    "cli",
    "people",
    "audiences",
    "planning",
)

Graph = dict[str, set[str]]


def modules(root: Path) -> dict[str, Path]:
    """Every module under the package directory `root` by dotted name (`__init__`: the package)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = (root.name, *path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    """Whether an `if` test is `TYPE_CHECKING` or `typing.TYPE_CHECKING`."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements under `node` that run: none below `if TYPE_CHECKING:`."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield from _import_nodes(ast.Module(body=[other], type_ignores=[]))
        else:
            yield from _import_nodes(child)


def _base(name: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The module a `from ... import` names, relative imports resolved against `name`."""
    if not node.level:
        return node.module or ""
    package = name if is_package else name.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def _known(dotted: str, known: Mapping[str, Path]) -> str | None:
    """The longest prefix of `dotted` that is one of the package's modules, else None."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in known:
            return prefix
    return None


def import_graph(root: Path) -> Graph:
    """Module → the package's modules it imports at run time (itself left out)."""
    known = modules(root)
    graph: Graph = {}
    for name, path in known.items():
        is_package = path.name == "__init__.py"
        targets: set[str | None] = set()
        for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(_known(alias.name, known) for alias in node.names)
            else:
                base = _base(name, is_package, node)
                targets.update(_known(f"{base}.{alias.name}", known) for alias in node.names)
        graph[name] = {target for target in targets if target is not None and target != name}
    return graph


def circles(graph: Graph) -> list[list[str]]:
    """One shortest circle through each group of modules that import each other, sorted."""
    found = []
    for group in _strongly_connected(graph):
        if len(group) < 2:
            continue
        start = min(group)
        paths = {start: [start]}
        queue = [start]
        while queue:
            here = queue.pop(0)
            for there in sorted(graph[here] & group):
                if there == start:
                    found.append(paths[here])
                    queue = []
                    break
                if there not in paths:
                    paths[there] = [*paths[here], there]
                    queue.append(there)
    return sorted(found)


def _strongly_connected(graph: Graph) -> list[set[str]]:
    """Tarjan's strongly connected components of `graph`, iteratively."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.add(member)
                        if member == node:
                            break
                    groups.append(group)
    return groups


def reachable(graph: Graph, start: str) -> set[str]:
    """Every module `start` loads, directly or through others."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _write(root: Path, files: Mapping[str, str]) -> Path:
    """A package `pkg` under `root` made of `files` (relative path → source)."""
    for relative, source in files.items():
        path = root / "pkg" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
    return root / "pkg"


def _short(name: str) -> str:
    """A module's name below the package, for messages."""
    return name.removeprefix(f"{PACKAGE.name}.")


def test_no_import_circle():
    found = circles(import_graph(PACKAGE))
    assert found == [], "import circles: " + "; ".join(
        " → ".join(_short(name) for name in [*circle, circle[0]]) for circle in found
    )


def test_no_module_over_400_lines():
    lines = {
        path.relative_to(PACKAGE).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
        for path in PACKAGE.rglob("*.py")
    }
    over = sorted((n, module) for module, n in lines.items() if n > MAX_LINES)
    assert over == [], f"modules over {MAX_LINES} lines (split each by its ideas): " + ", ".join(
        f"{module} ({n})" for n, module in reversed(over)
    )


def _outside_tiktok(name: str) -> bool:
    """Whether module `name` is one tiktok/ must never load."""
    first = _short(name).split(".")[0]
    return first in OUTSIDE_TIKTOK or first.startswith("store_")


def test_the_tiktok_package_loads_nothing_of_the_store_settings_sinks_target_or_sync():
    graph = import_graph(PACKAGE)
    tiktok = [name for name in graph if _short(name).split(".")[0] == "tiktok"]
    assert f"{PACKAGE.name}.tiktok.http" in tiktok
    assert f"{PACKAGE.name}.errors" in reachable(graph, f"{PACKAGE.name}.tiktok.http")
    wrong = [
        f"{_short(name)} → {_short(other)}"
        for name in sorted(tiktok)
        for other in sorted(reachable(graph, name))
        if _outside_tiktok(other)
    ]
    assert wrong == [], "tiktok/ loads, directly or through others: " + ", ".join(wrong)


def test_the_graph_reads_every_kind_of_import(tmp_path):
    root = _write(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "import pkg.b\nfrom pkg import c\nfrom .sub import d\n",
            "b.py": "def f():\n    from pkg.sub.d import name\n",
            "c.py": "from . import b as renamed\nimport json\n",
            "sub/__init__.py": "from .d import name\n",
            "sub/d.py": "from .. import c\nfrom ..sub import name\nname = 1\n",
        },
    )
    assert import_graph(root) == {
        "pkg": set(),
        "pkg.a": {"pkg.b", "pkg.c", "pkg.sub.d"},
        "pkg.b": {"pkg.sub.d"},
        "pkg.c": {"pkg.b"},
        "pkg.sub": {"pkg.sub.d"},
        "pkg.sub.d": {"pkg.c", "pkg.sub"},
    }


def test_a_circle_is_found_and_type_checking_imports_are_not_counted(tmp_path):
    root = _write(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "from pkg.b import x\nimport pkg.f\n",
            "b.py": "import typing\nif typing.TYPE_CHECKING:\n    from pkg.a import y\nx = 1\n",
            "f.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\n",
            "c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\n"
            "else:\n    import pkg.d\n",
            "d.py": "class D:\n    def f(self):\n        import pkg.e\n",
            "e.py": "import pkg.c\n",
        },
    )
    assert circles(import_graph(root)) == [["pkg.c", "pkg.d", "pkg.e"]]
