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
BEHIND_SERVICES = {"catalog", "indexes", "engine", "_catalog", "_indexes", "_engine"}
# Modules and names that only the services below web may use.
BEHIND_SERVICES_MODULES = (
    "vizdex.search.catalog",
    "vizdex.search.db",
    "vizdex.search.index_store",
    "vizdex.search.index_slot",
    "vizdex.search.models",
    "sqlite3",
    "sqlalchemy",
)
BEHIND_SERVICES_NAMES = {
    "Catalog",
    "IndexStore",
    "create_catalog_engine",
    "Session",
    "sessionmaker",
}
ATTRIBUTE_GETTERS = {"getattr", "attrgetter"}
# Route modules share types through web/schemas.py, never through each other.
CROSS_ROUTE_ALLOWED: set[tuple[str, str, str]] = set()


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _where(path: Path, node: ast.AST) -> str:
    shown = path.relative_to(WEB.parent) if path.is_relative_to(WEB.parent) else path.name
    return f"{shown}:{getattr(node, 'lineno', '?')}"


def test_the_scan_sees_the_routes_and_the_app() -> None:
    names = {path.relative_to(WEB).as_posix() for path in SOURCES}
    assert {"app.py", "routes/images.py", "routes/health.py", "routes/uploads.py"} <= names


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: path.relative_to(WEB).as_posix())
def test_web_does_not_reach_past_the_services(path: Path) -> None:
    assert not _reaches_past(path), "web/ must call services, not the catalog:\n" + "\n".join(
        _reaches_past(path)
    )


def _behind(module: str) -> bool:
    return any(
        module == banned or module.startswith(banned + ".") for banned in BEHIND_SERVICES_MODULES
    )


def _reaches_past(path: Path) -> list[str]:
    found = []
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Attribute) and node.attr in BEHIND_SERVICES:
            found.append(f"{_where(path, node)}: .{node.attr}")
        elif isinstance(node, ast.Import):
            found.extend(
                f"{_where(path, node)}: imports {alias.name}"
                for alias in node.names
                if _behind(alias.name)
            )
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if _behind(module):
                found.append(f"{_where(path, node)}: imports {module}")
            found.extend(
                f"{_where(path, node)}: imports {alias.name}"
                for alias in node.names
                if alias.name in BEHIND_SERVICES_NAMES
            )
        elif isinstance(node, ast.Name) and node.id in BEHIND_SERVICES_NAMES:
            found.append(f"{_where(path, node)}: uses {node.id}")
        elif (
            isinstance(node, ast.Call)
            and (getattr(node.func, "id", None) or getattr(node.func, "attr", None))
            in ATTRIBUTE_GETTERS
            and any(
                isinstance(arg, ast.Constant) and arg.value in BEHIND_SERVICES for arg in node.args
            )
        ):
            found.append(f"{_where(path, node)}: reads an attribute behind the services by name")
    return found


def test_the_scan_catches_each_way_past_the_services(tmp_path: Path) -> None:
    """Each of these forms was once planted by an adversarial review; each must be found."""
    planted = [
        "service.catalog.list_collections()",
        "vizdex.search._catalog.list_collections()",
        "getattr(vizdex.search, 'catalog')",
        "operator.attrgetter('indexes')(vizdex.search)",
        "from vizdex.search import Catalog",
        "from vizdex.search.catalog import Catalog as C",
        "from vizdex.search.db import create_catalog_engine",
        "import sqlite3",
        "import vizdex.search.index_store",
        "from sqlalchemy.orm import Session",
    ]
    for number, line in enumerate(planted):
        route = tmp_path / f"planted_{number}.py"
        route.write_text(line + "\n")
        assert _reaches_past(route), line
    clean = tmp_path / "clean.py"
    clean.write_text("vizdex.collections.describe('c')\nfrom vizdex.search import SearchService\n")
    assert _reaches_past(clean) == []


@pytest.mark.parametrize("path", sorted(ROUTES.glob("*.py")), ids=lambda path: path.stem)
def test_route_modules_do_not_import_each_other(path: Path) -> None:
    found: list[str] = []
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            found.extend(
                f"{_where(path, node)}: import {alias.name}"
                for alias in node.names
                if alias.name.startswith("vizdex.web.routes.")
            )
            continue
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
