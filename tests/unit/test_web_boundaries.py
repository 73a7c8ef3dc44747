"""The web room calls services only: a scan of its source, so reaching past them cannot come back.

Routes, the app factory and everything else under ``web/`` ask ``SearchService``, the indexer and
the small services beside them (``CollectionsService``, ``ImageFiles``, ``JobsService``); the
catalog, the index store, the database engine and SQLAlchemy sessions stay behind those.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

WEB = Path(__file__).resolve().parents[2] / "web"  # read from the source, like test_architecture
SOURCES = sorted(WEB.rglob("*.py"))
ROUTES = WEB / "routes"
BEHIND_SERVICES = {"catalog", "indexes", "engine"}
# Route modules share types through web/schemas.py, never through each other.
CROSS_ROUTE_ALLOWED: set[tuple[str, str, str]] = set()


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(WEB.parent)}:{getattr(node, 'lineno', '?')}"


def test_the_scan_sees_the_routes_and_the_app() -> None:
    names = {path.relative_to(WEB).as_posix() for path in SOURCES}
    assert {"app.py", "routes/images.py", "routes/health.py", "routes/uploads.py"} <= names


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: path.relative_to(WEB).as_posix())
def test_web_does_not_reach_past_the_services(path: Path) -> None:
    found = []
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Attribute) and node.attr in BEHIND_SERVICES:
            found.append(f"{_where(path, node)}: .{node.attr}")
        elif isinstance(node, ast.Import | ast.ImportFrom):
            modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                modules.append(node.module or "")
                if any(alias.name in {"Session", "sessionmaker"} for alias in node.names):
                    found.append(f"{_where(path, node)}: imports a SQLAlchemy session")
            found.extend(
                f"{_where(path, node)}: imports {module}"
                for module in modules
                if module.split(".")[0] == "sqlalchemy"
            )
        elif isinstance(node, ast.Name) and node.id in {"Session", "sessionmaker"}:
            found.append(f"{_where(path, node)}: uses {node.id}")
    assert not found, "web/ must call services, not the catalog:\n" + "\n".join(found)


@pytest.mark.parametrize("path", sorted(ROUTES.glob("*.py")), ids=lambda path: path.stem)
def test_route_modules_do_not_import_each_other(path: Path) -> None:
    found = []
    for node in ast.walk(_tree(path)):
        if not isinstance(node, ast.ImportFrom) or node.module is None:
            continue
        if node.module == "vizdex.web.routes":
            found.append(f"{_where(path, node)}: from vizdex.web.routes import ...")
        elif node.module.startswith("vizdex.web.routes."):
            other = node.module.rsplit(".", 1)[1]
            found.extend(
                f"{_where(path, node)}: {alias.name} from routes/{other}.py"
                for alias in node.names
                if (path.stem, other, alias.name) not in CROSS_ROUTE_ALLOWED
            )
    assert not found, "shared types belong in web/schemas.py:\n" + "\n".join(found)
