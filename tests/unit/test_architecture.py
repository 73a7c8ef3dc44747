"""The rooms import one way, core <- imaging <- encoders <- search <- indexer <- web / cli, and no
module imports itself back through others (ARCHITECTURE.md). Read from the source, not run."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The room of each top-level part of `vizdex`, and where it sits in the one-way order.
ROOMS: dict[str, float] = {
    "vizdex": -1,  # the package's __init__: importing vizdex.core must not load anything else
    "core": 0,
    "imaging": 1,
    "encoders": 2,
    "search": 3,
    "migrations": 3.5,  # Alembic's environment reads search's models, nothing above
    "indexer": 4,
    "web": 5,
    "cli": 6,
    "__main__": 7,  # python -m vizdex
}
# Only ``vizdex serve`` needs the web app, and it imports it when it runs.
LAZY_ONLY = {("cli", "web")}


def _room_folder(room: str) -> Path:
    if room in ("vizdex", "__main__"):
        return ROOT / "vizdex" / "__no_folder__"
    linked = ROOT / "vizdex" / room
    return linked.resolve() if linked.is_symlink() else linked


def _modules() -> Iterator[tuple[str, Path]]:
    yield "vizdex", ROOT / "vizdex" / "__init__.py"
    yield "vizdex.__main__", ROOT / "vizdex" / "__main__.py"
    for room in ROOMS:
        folder = _room_folder(room)
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join(("vizdex", room, *parts)), path


MODULES = dict(_modules())
# Importing by a string literal is an import too.
_BY_NAME = {"import_module", "__import__"}


def _package(module: str, path: Path) -> list[str]:
    parts = module.split(".")
    return parts if path.name == "__init__.py" else parts[:-1]


def _import_nodes(tree: ast.Module, *, on_import_only: bool) -> Iterator[ast.AST]:
    """Every node of ``tree``; ``on_import_only``: only those that run when the module is
    imported (not function bodies, not an ``if TYPE_CHECKING:`` body: class bodies, ``with``,
    loops, every part of ``try`` and any ``else`` do run)."""
    pending: list[ast.AST] = [tree]
    while pending:
        node = pending.pop()
        yield node
        if on_import_only and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if (
            on_import_only
            and isinstance(node, ast.If)
            and ast.unparse(node.test)
            in (
                "TYPE_CHECKING",
                "typing.TYPE_CHECKING",
            )
        ):
            pending.extend(node.orelse)
            continue
        pending.extend(ast.iter_child_nodes(node))


def _imports(path: Path, *, module_level_only: bool) -> Iterator[tuple[str, int]]:
    """(module imported, line) for each import, relative ones resolved; ``module_level_only``:
    those that run when the module is imported."""
    module = next((name for name, where in MODULES.items() if where == path), path.stem)
    tree = ast.parse(path.read_text(), str(path))
    for node in _import_nodes(tree, on_import_only=module_level_only):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = _package(module, path)
                base = ".".join([*package[: len(package) - node.level + 1], *filter(None, [base])])
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                yield (submodule if submodule in MODULES else base), node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif (
            isinstance(node, ast.Call)
            and (getattr(node.func, "attr", None) or getattr(node.func, "id", None)) in _BY_NAME
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.args[0].value, node.lineno


def _room(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "vizdex":
        return None
    if len(parts) == 1:
        return "vizdex"
    return parts[1] if parts[1] in ROOMS else None


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
        # Forms a first version of this test missed (an adversarial review planted them):
        "vizdex.search.relative": "from ..web import app\n",
        "vizdex.search.by_name": "import importlib\nimportlib.import_module('vizdex.web.app')\n",
        "vizdex.cli.class_body": "class Later:\n    import vizdex.web.app\n",
        "vizdex.cli.with_block": "with suppress(ImportError):\n    import vizdex.web.app\n",
        "vizdex.cli.finally_block": "try:\n    pass\nfinally:\n    import vizdex.web.app\n",
        "vizdex.cli.typing_else": "if TYPE_CHECKING:\n    pass\nelse:\n    import vizdex.web.app\n",
        "vizdex": "import vizdex.web.app\n",  # the package's own __init__
    }
    modules = {}
    for name, text in planted.items():
        modules[name] = tmp_path / f"{name}.py"
        modules[name].write_text(text)
    found = _upward_imports(modules)
    assert sorted(line.split(" ")[0] for line in found) == sorted(
        [
            "vizdex.core.bad.py:1",
            "vizdex.search.bad.py:2",
            "vizdex.web.bad.py:2",
            "vizdex.cli.eager.py:1",
            "vizdex.search.relative.py:1",
            "vizdex.search.by_name.py:2",
            "vizdex.cli.class_body.py:2",
            "vizdex.cli.with_block.py:2",
            "vizdex.cli.finally_block.py:4",
            "vizdex.cli.typing_else.py:4",
            "vizdex.py:1",
        ]
    )
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


# What each room may not import from outside vizdex (the standard library is always allowed).
FORBIDDEN_OUTSIDE = {
    "core": None,  # None: the standard library only
    "imaging": {"torch", "torchvision", "transformers", "faiss", "sqlalchemy", "litestar"},
    "encoders": {"faiss", "sqlalchemy", "alembic", "litestar", "uvicorn"},
    "search": {"torch", "torchvision", "transformers", "litestar", "uvicorn"},
    "indexer": {"litestar", "uvicorn"},
}


def test_rooms_import_only_what_they_may_from_outside() -> None:
    found = []
    for module, path in MODULES.items():
        room = _room(module)
        if room not in FORBIDDEN_OUTSIDE:
            continue
        forbidden = FORBIDDEN_OUTSIDE[room]
        for imported, line in _imports(path, module_level_only=False):
            top = imported.split(".")[0]
            if top in ("vizdex", "__future__", "_typeshed") or (  # _typeshed: type stubs only
                forbidden is None and top in sys.stdlib_module_names
            ):
                continue
            if forbidden is None or top in forbidden:
                found.append(f"{path.relative_to(ROOT)}:{line} ({room}) imports {imported}")
    assert not found, "\n".join(found)


RUNTIME_PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in (
    "torch", "transformers", "litestar", "faiss", "sqlalchemy", "pymilvus")
    or m.startswith("vizdex.web"))))
"""


# Each vector engine's client library is imported by its one store module (DESIGN.md).
ENGINE_MODULES = {"faiss": "vizdex.search.index", "pymilvus": "vizdex.search.milvus_store"}


def test_each_vector_engine_is_imported_by_its_store_module_only() -> None:
    found = []
    for module, path in MODULES.items():
        for imported, line in _imports(path, module_level_only=False):
            owner = ENGINE_MODULES.get(imported.split(".")[0])
            if owner is not None and module != owner:
                found.append(f"{path.relative_to(ROOT)}:{line} imports {imported}")
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    ("module", "allowed"),
    [
        ("vizdex", set()),
        ("vizdex.core.errors", set()),
        ("vizdex.core.env", set()),
        ("vizdex.imaging", set()),
        ("vizdex.search", {"faiss", "sqlalchemy"}),
        ("vizdex.cli", {"torch", "transformers", "faiss", "sqlalchemy"}),  # not vizdex.web
    ],
)
def test_importing_a_room_loads_only_what_it_needs(module: str, allowed: set[str]) -> None:
    """At run time too: what static reading cannot see (e.g. a function called at import)."""
    out = subprocess.run(
        [sys.executable, "-c", RUNTIME_PROBE, module],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=300,
    )
    loaded = {
        name.split(".")[0] if not name.startswith("vizdex") else "vizdex.web"
        for name in json.loads(out.stdout)
    }
    assert loaded <= allowed, f"importing {module} loaded {sorted(loaded - allowed)}"
