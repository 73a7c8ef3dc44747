"""Alembic migrations of the catalog, on SQLite and PostgreSQL: up, down, up again; no drift
from the models; refusals."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, inspect, text
from sqlalchemy.engine import make_url

from tests.conftest import ImageFactory
from tests.support.postgres import DATABASES, PostgresServer, database_url_for
from vizdex import migrations
from vizdex.cli import db as db_command
from vizdex.core.errors import UnavailableError
from vizdex.core.precision import Precision
from vizdex.search.catalog import Catalog
from vizdex.search.db import create_catalog_engine
from vizdex.search.errors import SchemaMismatchError, SchemaOutOfDateError
from vizdex.search.models import Base
from vizdex.search.schema import (
    SchemaState,
    downgrade,
    ensure_schema,
    head_revision,
    migrations_directory,
    schema_status,
    upgrade,
)
from vizdex.search.settings import CatalogSettings

TABLES = {"collections", "images", "embeddings", "embedding_tombstones", "jobs", "work_items"}

NEXT_REVISION = '''"""A later vizdex adds a column.

Revision ID: 0099
Revises: {head}
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0099"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("collections") as batch:
        batch.add_column(sa.Column("description", sa.Text(), nullable=True))


def downgrade() -> None:
    # On SQLite this copies and drops the collections table: children must survive it.
    with op.batch_alter_table("collections") as batch:
        batch.drop_column("description")
'''


@pytest.fixture(params=DATABASES)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every test that takes ``url`` runs on SQLite and on PostgreSQL: one history for both."""
    return database_url_for(request, tmp_path)


@pytest.fixture
def next_scripts(tmp_path: Path) -> Path:
    """The real migrations plus one newer revision: what a vizdex upgrade would ship."""
    scripts = tmp_path / "next-migrations"
    shutil.copytree(migrations_directory(), scripts, ignore=shutil.ignore_patterns("__pycache__"))
    text = NEXT_REVISION.replace("{head}", head_revision())
    (scripts / "versions" / "v0099_add_description.py").write_text(text)
    return scripts


def _tables(url: str) -> set[str]:
    engine = create_catalog_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_empty_to_head_to_base_to_head(url: str) -> None:
    engine = create_catalog_engine(url)
    try:
        assert schema_status(engine).state is SchemaState.EMPTY
        upgrade(url)
        assert schema_status(engine).state is SchemaState.CURRENT
        assert _tables(url) >= TABLES
        downgrade(url, "base")
        assert _tables(url) & TABLES == set()
        assert schema_status(engine).state is SchemaState.EMPTY
        upgrade(url)
        status = schema_status(engine)
        assert status.state is SchemaState.CURRENT and status.current == (head_revision(),)
    finally:
        engine.dispose()


def test_autogenerate_finds_no_difference_between_migrations_and_models(url: str) -> None:
    upgrade(url)
    engine = create_catalog_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


def test_scripts_are_found_from_the_package_not_the_working_directory(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert migrations_directory() == Path(migrations.__file__).parent
    upgrade(url)
    assert _tables(url) >= TABLES


def test_an_out_of_date_catalog_is_refused_with_what_to_run(url: str, next_scripts: Path) -> None:
    upgrade(url)  # a catalog made by today's vizdex...
    settings = CatalogSettings(database_url=url)
    with pytest.raises(SchemaOutOfDateError) as refused:  # ...opened by tomorrow's
        Catalog.open(settings, script_location=next_scripts)
    assert "run `vizdex db upgrade`" in refused.value.message
    assert head_revision() in refused.value.message and "0099" in refused.value.message
    assert refused.value.code == "schema_out_of_date"


def test_auto_upgrade_migrates_and_keeps_the_data(
    url: str, next_scripts: Path, new_image: ImageFactory
) -> None:
    catalog = Catalog.open(CatalogSettings(database_url=url))
    collection = catalog.create_collection("photos", ["clip"])
    vector = np.ones(4, dtype=np.float32) / 2
    catalog.add_images(collection.id, [new_image(i, {"clip": vector}) for i in range(3)])
    catalog.close()

    upgraded = Catalog.open(
        CatalogSettings(database_url=url, auto_upgrade=True), script_location=next_scripts
    )
    with upgraded.engine.connect() as connection:
        columns = {c["name"] for c in inspect(connection).get_columns("collections")}
    assert "description" in columns
    assert upgraded.count_images(collection.id) == 3
    upgraded.close()

    # Going back recreates the collections table (SQLite batch mode); with foreign keys on,
    # dropping the old table would have cascaded into images and embeddings.
    downgrade(url, head_revision(), script_location=next_scripts)
    catalog = Catalog.open(CatalogSettings(database_url=url))
    assert catalog.count_images(collection.id) == 3
    assert catalog.embedding_summary(collection.id, "clip")[1] == 3
    catalog.close()


def test_a_catalog_from_a_newer_vizdex_is_refused(url: str, next_scripts: Path) -> None:
    upgrade(url, script_location=next_scripts)
    engine = create_catalog_engine(url)
    try:
        with pytest.raises(SchemaMismatchError, match="newer vizdex"):
            ensure_schema(engine, auto_upgrade=True)
    finally:
        engine.dispose()


def test_a_database_that_is_not_a_catalog_is_left_alone(url: str) -> None:
    engine = create_catalog_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE somebody_elses (x INTEGER)"))
        with pytest.raises(SchemaMismatchError, match="no vizdex schema revision"):
            ensure_schema(engine, auto_upgrade=True)
        assert _tables(url) == {"somebody_elses"}
    finally:
        engine.dispose()


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="vizdex")
    db_command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.handler(args))


def test_db_commands_show_and_upgrade_the_schema(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(["db", "current", "--database-url", url]) == 1
    assert "state:    empty" in capsys.readouterr().out
    assert _run(["db", "upgrade", "--database-url", url]) == 0
    assert f"(empty) -> {head_revision()}" in capsys.readouterr().out
    assert _run(["db", "upgrade", "--database-url", url]) == 0
    assert "already at" in capsys.readouterr().out
    assert _run(["db", "current", "--database-url", url]) == 0
    assert "state:    current" in capsys.readouterr().out


def test_db_current_reports_a_missing_sqlite_catalog_empty_without_creating_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``db current`` only looks: a mistyped data dir gets no new folder nor catalog file."""
    missing = tmp_path / "no-such-data" / "catalog.db"
    assert _run(["db", "current", "--database-url", f"sqlite:///{missing}"]) == 1
    assert "state:    empty" in capsys.readouterr().out
    assert not missing.parent.exists()


def test_db_upgrade_reads_the_data_dir_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VIZDEX_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("VIZDEX_DATABASE_URL", raising=False)
    assert _run(["db", "upgrade"]) == 0
    assert (tmp_path / "data" / "catalog.db").is_file()
    assert "upgraded" in capsys.readouterr().out


def _refusal(url: str) -> str:
    with pytest.raises(UnavailableError) as refused:
        Catalog.open(CatalogSettings(database_url=url))
    return refused.value.message


def test_a_postgresql_catalog_that_cannot_be_opened_says_why_in_one_line(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    unreachable = f"postgresql://vizdex:secret@/vizdex?host={tmp_path / 'no-server-here'}"
    message = _refusal(unreachable)
    assert "\n" not in message and "no-server-here" in message
    assert "secret" not in message  # the password is never echoed
    assert "is the server running" in message
    no_such_user = make_url(postgres.url).set(username="nobody").render_as_string(False)
    assert 'role "nobody" does not exist' in _refusal(no_such_user)
    no_such_database = postgres.url_for("no_such_catalog")
    assert 'database "no_such_catalog" does not exist' in _refusal(no_such_database)
    # `vizdex db upgrade` / `db current` say the same, not "internal error".
    for action in ("upgrade", "current"):
        with pytest.raises(UnavailableError, match="is the server running"):
            _run(["db", action, "--database-url", unreachable])


def test_0003_gives_existing_collections_no_recorded_precision_and_goes_back(
    url: str, new_image: ImageFactory
) -> None:
    upgrade(url, "0002")
    engine = create_catalog_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO collections (name, models, last_seq, created_at) "
                    "VALUES ('old', '[\"clip\"]', 0, '2026-11-26 07:46:26')"
                )
            )
        upgrade(url, "0003")
        with engine.connect() as connection:
            stored = connection.execute(text("SELECT precisions FROM collections")).scalar_one()
        # SQLite hands JSON back as text, PostgreSQL's driver as the parsed value.
        assert (json.loads(stored) if isinstance(stored, str) else stored) == {}
    finally:
        engine.dispose()
    upgrade(url)  # the later revisions (this code opens only the head) leave precisions alone
    catalog = Catalog.open(CatalogSettings(database_url=url))
    old = catalog.get_collection("old")
    assert old.precisions == {}
    vector = np.ones(4, dtype=np.float32) / 2
    catalog.add_images(
        old.id, [new_image(1, {"clip": vector})], precisions={"clip": Precision.BFLOAT16}
    )
    assert catalog.get_collection("old").precisions == {"clip": ("bfloat16",)}
    catalog.close()

    downgrade(url, "0002")
    engine = create_catalog_engine(url)
    try:
        with engine.connect() as connection:
            columns = {c["name"] for c in inspect(connection).get_columns("collections")}
            images = connection.execute(text("SELECT count(*) FROM embeddings")).scalar_one()
        assert "precisions" not in columns and images == 1
    finally:
        engine.dispose()


def test_0004_adds_vector_store_positions_and_goes_back(url: str) -> None:
    upgrade(url, "0003")
    upgrade(url, "0004")
    upgrade(url)  # this code opens only the head; the later revisions leave positions alone
    catalog = Catalog.open(CatalogSettings(database_url=url))
    record = catalog.create_collection("c", ["clip"])
    assert catalog.store_position("milvus://m:19530", record.id, "clip") is None
    catalog.set_store_position("milvus://m:19530", record.id, "clip", 7, index_type="HNSW")
    catalog.set_store_position("milvus://m:19530", record.id, "clip", 9, index_type="HNSW")
    position = catalog.store_position("milvus://m:19530", record.id, "clip")
    assert position is not None and (position.applied_seq, position.index_type) == (9, "HNSW")
    assert catalog.store_positions("elsewhere.db") == []
    catalog.delete_collection("c")  # its positions go with it
    assert catalog.store_positions("milvus://m:19530") == []
    catalog.close()
    downgrade(url, "0003")
    engine = create_catalog_engine(url)
    try:
        with engine.connect() as connection:
            assert "vector_store_positions" not in inspect(connection).get_table_names()
    finally:
        engine.dispose()


def test_0005_gives_existing_collections_ready_models_no_defaults_and_goes_back(url: str) -> None:
    upgrade(url, "0004")
    engine = create_catalog_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO collections (name, models, precisions, last_seq, created_at) "
                    "VALUES ('old', '[\"clip\", \"dino\"]', '{}', 7, '2026-11-26 07:46:26')"
                )
            )
        upgrade(url, "0005")
    finally:
        engine.dispose()
    upgrade(url)  # this code opens only the head; the later revisions leave these columns alone
    catalog = Catalog.open(CatalogSettings(database_url=url))
    old = catalog.get_collection("old")
    catalog.close()
    assert old.model_states == {} and old.ready_models == ("clip", "dino")
    assert (old.text_model, old.image_model, old.pruned_seq, old.last_seq) == (None, None, 0, 7)

    downgrade(url, "0004")
    engine = create_catalog_engine(url)
    try:
        with engine.connect() as connection:
            columns = {c["name"] for c in inspect(connection).get_columns("collections")}
            kept = connection.execute(text("SELECT last_seq FROM collections")).scalar_one()
        assert not columns & {"model_states", "text_model", "image_model", "pruned_seq"}
        assert kept == 7
    finally:
        engine.dispose()


RELEASE_0004 = Path(__file__).resolve().parents[1] / "support" / "catalogs" / "release-0004.db"


def _load_release_0004(url: str) -> None:
    """The catalog vizdex wrote at revision 0004 (float32 vectors), copied row by row into a
    database of that revision: the same file on SQLite, its rows on PostgreSQL."""
    upgrade(url, "0004")
    source = create_catalog_engine(f"sqlite:///{RELEASE_0004}")
    target = create_catalog_engine(url)
    # The tables as they were at 0004 (the models' are the head's, with later columns).
    tables = MetaData()
    tables.reflect(source)
    try:
        with source.connect() as reading, target.begin() as writing:
            for table in tables.sorted_tables:
                if table.name == "alembic_version":  # the target's own says 0004 already
                    continue
                rows = [dict(row._mapping) for row in reading.execute(table.select())]
                if rows:
                    writing.execute(table.insert(), rows)
    finally:
        source.dispose()
        target.dispose()


def _stored_vectors(url: str) -> dict[tuple[int, str], tuple[int, bytes]]:
    engine = create_catalog_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT image_id, model, dim, vector FROM embeddings"))
            return {(row[0], row[1]): (row[2], bytes(row[3])) for row in rows}
    finally:
        engine.dispose()


def test_0006_stores_a_previous_release_catalogs_vectors_as_float16_and_goes_back(
    url: str,
) -> None:
    _load_release_0004(url)
    before = _stored_vectors(url)
    assert len(before) == 35 * 2 + 6 and all(len(v) == 4 * d for d, v in before.values())

    upgrade(url)
    after = _stored_vectors(url)
    assert after.keys() == before.keys()
    assert all(len(v) == 2 * d for d, v in after.values())  # half the bytes
    catalog = Catalog.open(CatalogSettings(database_url=url))
    try:
        for name in ("photos", "raw"):
            collection = catalog.get_collection(name)
            for model in collection.models:
                seq = catalog.collection_seq(collection.id)
                batches = list(catalog.iter_embeddings(collection.id, model, upto_seq=seq))
                ids = np.concatenate([b[0] for b in batches])
                vectors = np.concatenate([b[1] for b in batches])
                original = np.stack([np.frombuffer(before[(int(i), model)][1], "<f4") for i in ids])
                # float16 keeps ~3 significant digits: cosines with the float32 originals stay
                # within 1e-6 of 1; unit vectors come back unit length.
                cosine = np.sum(vectors * original, axis=1) / (
                    np.linalg.norm(vectors, axis=1) * np.linalg.norm(original, axis=1)
                )
                assert cosine.min() > 1 - 1e-6
                np.testing.assert_allclose(vectors, original, rtol=1e-3, atol=1e-3)
                if name == "photos":
                    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
        # Nothing else moved: the change feed and its tombstones are as the release left them.
        photos = catalog.get_collection("photos")
        changes = catalog.changes(photos.id, "clip", after_seq=0, upto_seq=photos.last_seq)
        assert len(changes.removed_ids) == 8 and len(changes.added_ids) == 35
    finally:
        catalog.close()

    downgrade(url, "0005")
    widened = _stored_vectors(url)
    for key, (dim, data) in widened.items():
        assert len(data) == 4 * dim
        np.testing.assert_allclose(
            np.frombuffer(data, "<f4"), np.frombuffer(before[key][1], "<f4"), rtol=1e-3, atol=1e-3
        )
    upgrade(url)  # and up again: an interrupted or repeated upgrade converts each row once
    assert _stored_vectors(url) == after
