"""The rooms import one way, core <- imaging <- encoders <- search <- indexer <- web / cli, and no
module imports itself back through others (ARCHITECTURE.md). Read from the source, not run."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The room of each top-level part of `vizdex`, and where it sits in the one-way order.
ROOMS: dict[str, float] = {
    "core": 0,
    "imaging": 1,
    "encoders": 2,
    "search": 3,
    "migrations": 3.5,  # Alembic's environment reads search's models, nothing above
    "indexer": 4,
    "web": 5,
    "cli": 6,
}
# Only ``vizdex serve`` needs the web app, and it imports it when it runs.
LAZY_ONLY = {("cli", "web")}


def _room_folder(room: str) -> Path:
    linked = ROOT / "vizdex" / room
    return linked.resolve() if linked.is_symlink() else linked


def _modules() -> Iterator[tuple[str, Path]]:
    for room in ROOMS:
        folder = _room_folder(room)
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join(("vizdex", room, *parts)), path


MODULES = dict(_modules())


def _imports(path: Path, *, module_level_only: bool) -> Iterator[tuple[str, int]]:
    """(module imported, line) for each import; ``module_level_only``: those run on import
    (``if TYPE_CHECKING:`` blocks are not; other top-level ``if``/``try`` blocks are)."""
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    pending = list(nodes)
    while pending:
        node = pending.pop()
        if module_level_only and isinstance(node, ast.If | ast.Try):
            if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
                continue
            pending.extend(node.body)
            pending.extend(node.orelse)
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                yield (submodule if submodule in MODULES else node.module), node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "vizdex" and parts[1] in ROOMS else None


def test_every_room_is_found() -> None:
    assert {_room(module) for module in MODULES} == set(ROOMS)
    assert len(MODULES) > 80


def _upward_imports(modules: dict[str, Path]) -> list[str]:
    found = []
    for module, path in modules.items():
        room = _room(module)
        assert room is not None, module
        eager = {name for name, _ in _imports(path, module_level_only=True)}
        for imported, line in _imports(path, module_level_only=False):
            target = _room(imported)
            if target is None or target == room:
                continue
            if (room, target) in LAZY_ONLY:
                if imported not in eager:
                    continue
            elif ROOMS[target] < ROOMS[room]:
                continue
            found.append(f"{path.name}:{line} ({room}) imports {imported}")
    return found


def test_no_room_imports_a_higher_one() -> None:
    upward = _upward_imports(MODULES)
    assert not upward, "imports against the room order:\n" + "\n".join(upward)


def test_only_serve_imports_the_web_app() -> None:
    found = sorted(
        str(path.relative_to(ROOT))
        for module, path in MODULES.items()
        if _room(module) == "cli"
        and any(_room(name) == "web" for name, _ in _imports(path, module_level_only=False))
    )
    assert found == ["vizdex/cli/serve.py"]


def test_no_import_cycles() -> None:
    graph = {
        module: {
            name
            for name, _ in _imports(path, module_level_only=True)
            if name in MODULES and name != module
        }
        for module, path in MODULES.items()
    }
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle as a path of modules, or None (depth-first search with three colours)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)) is not None:
            return found
    return None


def test_the_checks_catch_what_they_claim(tmp_path: Path) -> None:
    """Planted breakages are found: upward imports (also type-only ones), and cycles."""
    planted = {
        "vizdex.core.bad": "from vizdex.web.app import create_app\n",
        "vizdex.search.bad": "if True:\n    import vizdex.indexer.jobs\n",
        "vizdex.web.bad": "def f() -> None:\n    from vizdex.cli.main import main\n",
        "vizdex.cli.ok": "def f() -> None:\n    import vizdex.web.app\n",
        "vizdex.cli.typed": "if TYPE_CHECKING:\n    from vizdex.web.app import App\n",
        "vizdex.cli.eager": "import vizdex.web.app\n",
        "vizdex.indexer.ok": "from vizdex.search import Catalog\nfrom vizdex.core import env\n",
    }
    modules = {}
    for name, text in planted.items():
        modules[name] = tmp_path / f"{name}.py"
        modules[name].write_text(text)
    found = _upward_imports(modules)
    assert [line.split(" ")[0] for line in found] == [
        "vizdex.core.bad.py:1",
        "vizdex.search.bad.py:2",
        "vizdex.web.bad.py:2",
        "vizdex.cli.eager.py:1",
    ]
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
