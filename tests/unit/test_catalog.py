"""The catalog on a real SQLite file and a real PostgreSQL: collections, images, vectors,
sequence numbers, jobs. Every test runs on both (``database_url`` below)."""

from __future__ import annotations

import dataclasses
import socket
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import event, inspect, text
from sqlalchemy.orm import Session

from tests.conftest import ImageFactory, UnitVectors
from tests.support.postgres import DATABASES, database_url_for
from vizdex.core.errors import InvalidInputError, UnavailableError
from vizdex.search.catalog import MAX_JOB_FAILURES, Catalog
from vizdex.search.catalog.rows import IMAGE_FIELDS, image_attribute
from vizdex.search.errors import (
    CollectionExistsError,
    CollectionNotFoundError,
    ImageNotFoundError,
    InvalidQueryError,
    JobNotFoundError,
)
from vizdex.search.float16 import from_float16
from vizdex.search.models import Image
from vizdex.search.records import (
    ImageFilter,
    ImageRecord,
    ImageStatus,
    JobFailure,
    JobState,
    NewImage,
    SourceKind,
    SourceUpdate,
)
from vizdex.search.schema import SchemaState, schema_status
from vizdex.search.settings import CatalogSettings


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, data_dir: Path) -> str:
    return database_url_for(request, data_dir)


def test_a_fresh_catalog_gets_the_schema_and_safe_engine_settings(catalog: Catalog) -> None:
    assert schema_status(catalog.engine).state is SchemaState.CURRENT
    with catalog.engine.connect() as connection:
        if connection.dialect.name == "sqlite":

            def pragma(name: str) -> object:
                return connection.execute(text(f"PRAGMA {name}")).scalar()

            assert pragma("journal_mode") == "wal"
            assert pragma("synchronous") == 2  # FULL
            assert pragma("foreign_keys") == 1
            assert int(pragma("busy_timeout")) > 0  # type: ignore[call-overload]
            return
        # PostgreSQL: a writer waits a bounded time for a row lock, as SQLite's busy timeout.
        assert connection.execute(text("SHOW lock_timeout")).scalar() == "30s"
    # Reads see one snapshot and cannot write; writes run at READ COMMITTED behind row locks.
    with catalog._read() as session:
        assert _setting(session, "transaction_isolation") == "repeatable read"
        assert _setting(session, "transaction_read_only") == "on"
    with catalog._write() as session:
        assert _setting(session, "transaction_isolation") == "read committed"


def _setting(session: Session, name: str) -> object:
    return session.execute(text(f"SHOW {name}")).scalar()


def test_collections_are_created_listed_found_and_deleted(catalog: Catalog) -> None:
    created = catalog.create_collection("photos", ["clip", "dino"], exact_max=10)
    assert created.models == ("clip", "dino")
    assert created.created_at.tzinfo is UTC
    assert catalog.get_collection("photos") == created
    assert catalog.get_collection_by_id(created.id) == created
    catalog.create_collection("art", ["clip"], index_factory="IVF16,Flat")
    assert [c.name for c in catalog.list_collections()] == ["art", "photos"]
    with pytest.raises(CollectionExistsError):
        catalog.create_collection("photos", ["clip"])
    assert catalog.delete_collection("photos").id == created.id
    with pytest.raises(CollectionNotFoundError):
        catalog.get_collection("photos")
    with pytest.raises(CollectionNotFoundError):
        catalog.delete_collection("photos")


@pytest.mark.parametrize("name", ["", "has space", "../up", "x" * 101, "-dash-first"])
def test_bad_collection_names_are_refused(catalog: Catalog, name: str) -> None:
    with pytest.raises(InvalidInputError):
        catalog.create_collection(name, ["clip"])


@pytest.mark.parametrize("models", [[], ["clip", "clip"], [""]])
def test_a_collection_needs_distinct_models(catalog: Catalog, models: list[str]) -> None:
    with pytest.raises(InvalidInputError):
        catalog.create_collection("photos", models)


def test_adding_images_dedupes_by_sha256_and_keeps_their_facts(
    catalog: Catalog, unit_vectors: UnitVectors, new_image: ImageFactory
) -> None:
    collection = catalog.create_collection("photos", ["clip"])
    vectors = unit_vectors(4, 8)
    first = catalog.add_images(
        collection.id,
        [
            new_image(
                "a",
                {"clip": vectors[0]},
                metadata={"camera": "x100", "stars": 4},
                source_kind=SourceKind.PATH,
                source_uri="/photos/a.jpg",
                source_size=1234,
                source_mtime_ns=1_700_000_000_123_456_789,
                original_name="a.jpg",
            ),
            new_image("b", {"clip": vectors[1]}),
            new_image("a", {"clip": vectors[2]}),  # same bytes again within the batch
        ],
    )
    assert [(o.id, o.created) for o in first] == [(1, True), (2, True), (1, False)]
    again = catalog.add_images(collection.id, [new_image("b", {"clip": vectors[3]})])
    assert [(o.id, o.created) for o in again] == [(2, False)]
    image = catalog.get_image(collection.id, 1)
    assert image.metadata == {"camera": "x100", "stars": 4}
    assert image.source_kind is SourceKind.PATH and image.source_uri == "/photos/a.jpg"
    assert image.source_mtime_ns == 1_700_000_000_123_456_789
    assert image.status is ImageStatus.READY
    assert image.created_at.tzinfo is UTC
    assert catalog.find_by_sha256(collection.id, [image.sha256.upper()]) == {image.sha256: 1}
    assert [i.id for i in catalog.find_by_source(collection.id, "/photos/a.jpg")] == [1]
    ids, stored = catalog.get_vectors(collection.id, "clip", [2, 1, 99])
    assert ids.tolist() == [2, 1]
    # Stored as float16 (about 3 significant digits), handed back as float32.
    np.testing.assert_allclose(stored, vectors[[1, 0]], atol=1e-3)
    assert catalog.count_images(collection.id) == 2


def test_a_bad_image_in_a_batch_commits_nothing(
    catalog: Catalog, unit_vectors: UnitVectors, new_image: ImageFactory
) -> None:
    collection = catalog.create_collection("photos", ["clip", "dino"])
    good = {"clip": unit_vectors(1, 8)[0], "dino": unit_vectors(1, 4)[0]}
    bad_batches = [
        [new_image("x", {"clip": good["clip"]})],  # a model's vector missing
        [new_image("x", {**good, "other": good["dino"]})],  # an unknown model
        [new_image("x", {**good, "clip": np.full(8, np.nan)})],
        [new_image("x", good), new_image("y", {**good, "clip": unit_vectors(1, 9)[0]})],
        [new_image("x", good, metadata={"bad": {1, 2}})],  # not JSON
    ]
    for batch in bad_batches:
        with pytest.raises(InvalidInputError):
            catalog.add_images(collection.id, batch)
    not_a_hash = NewImage(
        sha256="nothex", width=1, height=1, format="png", byte_size=1, vectors=good
    )
    with pytest.raises(InvalidInputError):
        catalog.add_images(collection.id, [not_a_hash])
    assert catalog.count_images(collection.id) == 0
    assert catalog.collection_seq(collection.id) == 0
    with pytest.raises(CollectionNotFoundError):
        catalog.add_images(999, [new_image("x", good)])


def test_a_refused_image_is_named_by_its_file_name_or_its_short_sha256(
    catalog: Catalog, unit_vectors: UnitVectors, new_image: ImageFactory
) -> None:
    """The refusal says which image of a batch is wrong and what it lacks or has too many of:
    its original name, else the first 12 hex digits of its sha256."""
    collection = catalog.create_collection("photos", ["clip", "dino"])
    clip = unit_vectors(1, 8)[0]
    unnamed = new_image("x", {"clip": clip})
    with pytest.raises(InvalidInputError) as refused:
        catalog.add_images(collection.id, [unnamed])
    assert f"image '{unnamed.sha256[:12]}' needs exactly one vector" in str(refused.value)
    assert "missing ['dino'], unexpected []" in str(refused.value)
    named = new_image("y", {"clip": clip, "other": clip}, original_name="cat.png")
    with pytest.raises(InvalidInputError) as refused:
        catalog.add_images(collection.id, [named])
    assert "image 'cat.png' needs exactly one vector" in str(refused.value)
    assert "missing ['dino'], unexpected ['other']" in str(refused.value)


def test_sequence_numbers_order_every_add_and_delete(
    catalog: Catalog, unit_vectors: UnitVectors, new_image: ImageFactory
) -> None:
    collection = catalog.create_collection("photos", ["clip", "dino"])

    def add(keys: list[str]) -> list[int]:
        clip, dino = unit_vectors(len(keys), 8), unit_vectors(len(keys), 4)
        items = [new_image(key, {"clip": clip[i], "dino": dino[i]}) for i, key in enumerate(keys)]
        return [o.id for o in catalog.add_images(collection.id, items)]

    first = add(["a", "b", "c"])
    assert catalog.collection_seq(collection.id) == 6  # one per (image, model)
    assert catalog.delete_images(collection.id, [first[1], 12345]) == [first[1]]
    assert catalog.collection_seq(collection.id) == 8  # one tombstone per vector
    later = add(["d"])
    assert later[0] > max(first)  # ids are never reused
    assert catalog.collection_seq(collection.id) == 10

    everything = catalog.changes(collection.id, "clip", after_seq=0, upto_seq=10)
    assert everything.removed_ids.tolist() == [first[1]]
    assert everything.added_ids.tolist() == [first[0], first[2], later[0]]
    # Only what happened after a position: the delete and the last add.
    after_first_batch = catalog.changes(collection.id, "dino", after_seq=6, upto_seq=10)
    assert after_first_batch.removed_ids.tolist() == [first[1]]
    assert after_first_batch.added_ids.tolist() == later
    assert after_first_batch.added_vectors.shape == (1, 4)
    assert catalog.changes(collection.id, "clip", after_seq=10, upto_seq=10).empty

    batches = list(catalog.iter_embeddings(collection.id, "clip", upto_seq=10, batch_size=2))
    assert [b[0].tolist() for b in batches] == [[first[0], first[2]], [later[0]]]
    assert catalog.embedding_summary(collection.id, "clip") == (
        10,
        3,
        first[0] + first[2] + later[0],
    )


def test_replacing_a_vector_leaves_a_tombstone_then_the_new_vector(
    catalog: Catalog, unit_vectors: UnitVectors, new_image: ImageFactory
) -> None:
    collection = catalog.create_collection("photos", ["clip"])
    vectors = unit_vectors(3, 8)
    ids = [
        o.id
        for o in catalog.add_images(
            collection.id, [new_image(i, {"clip": vectors[i]}) for i in range(2)]
        )
    ]
    catalog.put_embeddings(collection.id, "clip", [ids[0]], vectors[2:3])
    change = catalog.changes(collection.id, "clip", after_seq=2, upto_seq=4)
    assert change.removed_ids.tolist() == [ids[0]]
    assert change.added_ids.tolist() == [ids[0]]
    np.testing.assert_allclose(change.added_vectors[0], vectors[2], atol=1e-3)  # float16
    with pytest.raises(ImageNotFoundError):
        catalog.put_embeddings(collection.id, "clip", [999], vectors[:1])
    with pytest.raises(InvalidInputError):
        catalog.put_embeddings(collection.id, "dino", [ids[0]], vectors[:1])


def test_filters_match_metadata_by_type_and_created_time(
    catalog: Catalog, unit_vectors: UnitVectors, new_image: ImageFactory
) -> None:
    collection = catalog.create_collection("photos", ["clip"])
    metadata = [
        {"camera": "x100", "stars": 5, "favourite": True, "ratio": 1.5},
        {"camera": "x100", "stars": 1, "favourite": False},
        {"camera": "gr3", "stars": 5, "favourite": 1},  # 1 is not True
        {},
    ]
    vectors = unit_vectors(len(metadata), 8)
    catalog.add_images(
        collection.id,
        [new_image(i, {"clip": vectors[i]}, metadata=m) for i, m in enumerate(metadata)],
    )
    images = catalog.get_images(collection.id, [1, 2, 3, 4])

    def sql(**metadata_filter: object) -> list[int]:
        """What SQL alone returns: no Python re-check, so a dropped SQL clause shows here."""
        filters = ImageFilter(metadata=metadata_filter)  # type: ignore[arg-type]
        return catalog.filter_image_ids(collection.id, filters)

    assert sql(camera="x100") == [1, 2]
    assert sql(stars=5) == [1, 3]
    assert sql(stars=5.0) == [1, 3]
    assert sql(ratio=1.5) == [1]
    assert sql(camera="x100", stars=1) == [2]
    assert sql(camera="nope") == []
    # SQLite's JSON cannot tell true from 1: SQL narrows to both, ImageFilter.matches (which the
    # ranker applies to every hit) has the final, type-exact word.
    favourite = ImageFilter(metadata={"favourite": True})
    assert sql(favourite=True) == [1, 3]
    assert [i for i in sql(favourite=True) if favourite.matches(images[i])] == [1]
    assert catalog.filter_image_ids(collection.id, ImageFilter(), among=[2, 4, 77]) == [2, 4]
    assert catalog.filter_image_ids(collection.id, ImageFilter(), limit=2) == [1, 2]
    created = images[1].created_at
    after = ImageFilter(created_after=created + timedelta(days=1))
    assert catalog.filter_image_ids(collection.id, after) == []
    window = ImageFilter(
        created_after=created - timedelta(seconds=1),
        created_before=datetime.now(UTC) + timedelta(seconds=1),
    )
    assert catalog.filter_image_ids(collection.id, window) == [1, 2, 3, 4]


@pytest.mark.parametrize(
    "bad",
    [
        {"metadata": {"a'b": 1}},
        {"metadata": {"k": [1]}},
        {"metadata": {"k": None}},
        {"created_after": datetime(2025, 1, 2), "created_before": datetime(2025, 1, 1)},
    ],
)
def test_bad_filters_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(InvalidQueryError):
        ImageFilter(**bad)  # type: ignore[arg-type]


def test_metadata_updates_and_listing(
    catalog: Catalog, unit_vectors: UnitVectors, new_image: ImageFactory
) -> None:
    collection = catalog.create_collection("photos", ["clip"])
    vectors = unit_vectors(5, 8)
    catalog.add_images(collection.id, [new_image(i, {"clip": vectors[i]}) for i in range(5)])
    seq = catalog.collection_seq(collection.id)
    updated = catalog.update_image(
        collection.id, 3, metadata={"tag": "cat"}, thumbnail_path="thumbs/3.webp"
    )
    assert updated.metadata == {"tag": "cat"} and updated.thumbnail_path == "thumbs/3.webp"
    assert updated.updated_at >= updated.created_at
    # The metadata change takes a sequence number (stores mirroring metadata follow it in the
    # feed); a thumbnail or status change alone takes none.
    assert catalog.collection_seq(collection.id) == seq + 1 == updated.metadata_seq
    assert catalog.metadata_changes(collection.id, after_seq=seq, upto_seq=seq + 1) == [3]
    catalog.update_image(collection.id, 3, thumbnail_path="thumbs/3b.webp")
    assert catalog.collection_seq(collection.id) == seq + 1
    assert [i.id for i in catalog.list_images(collection.id, after_id=2, limit=2)] == [3, 4]
    with pytest.raises(ImageNotFoundError):
        catalog.update_image(collection.id, 42, metadata={})
    with pytest.raises(ImageNotFoundError):
        catalog.get_image(collection.id, 42)


def test_deleting_a_collection_removes_everything_it_owns(
    catalog: Catalog, unit_vectors: UnitVectors, new_image: ImageFactory
) -> None:
    doomed = catalog.create_collection("doomed", ["clip"])
    kept = catalog.create_collection("kept", ["clip"])
    vectors = unit_vectors(4, 8)
    for collection in (doomed, kept):
        ids = [
            o.id
            for o in catalog.add_images(
                collection.id,
                [new_image((collection.id, i), {"clip": vectors[i]}) for i in range(2)],
            )
        ]
        catalog.delete_images(collection.id, ids[:1])
        catalog.create_job(collection.id, kind="folder")
    catalog.delete_collection("doomed")
    with catalog.engine.connect() as connection:
        for table in ("images", "embeddings", "embedding_tombstones", "jobs"):
            owners = connection.execute(text(f"SELECT DISTINCT collection_id FROM {table}"))
            assert [row[0] for row in owners] == [kept.id], table


def test_job_lifecycle_counts_and_capped_failures(catalog: Catalog) -> None:
    collection = catalog.create_collection("photos", ["clip"])
    job = catalog.create_job(collection.id, kind="folder", source="/photos", total=10)
    assert job.state is JobState.PENDING and job.finished_at is None
    catalog.set_job_state(job.id, JobState.RUNNING)
    catalog.record_job_progress(
        job.id, done=3, skipped=1, failures=[JobFailure("/photos/x.jpg", "corrupt", "bad JPEG")]
    )
    many = [JobFailure(f"/p/{i}", "too_large", "too big") for i in range(MAX_JOB_FAILURES + 5)]
    progressed = catalog.record_job_progress(job.id, total=2000, failures=many)
    assert (progressed.total, progressed.done, progressed.skipped) == (2000, 3, 1)
    assert progressed.failed == MAX_JOB_FAILURES + 6  # counts stay exact...
    assert len(progressed.failures) == MAX_JOB_FAILURES  # ...the stored reasons are capped
    assert progressed.failures[0] == JobFailure("/photos/x.jpg", "corrupt", "bad JPEG")
    finished = catalog.set_job_state(job.id, JobState.DONE)
    assert finished.finished_at is not None and finished.state.finished
    assert catalog.get_job(job.id) == finished
    assert [j.id for j in catalog.list_jobs(collection_id=collection.id)] == [job.id]
    assert catalog.list_jobs(state=JobState.RUNNING) == []
    with pytest.raises(JobNotFoundError):
        catalog.get_job(999)


def test_concurrent_writers_get_distinct_gapless_sequence_numbers(
    catalog: Catalog, unit_vectors: UnitVectors, new_image: ImageFactory
) -> None:
    collection = catalog.create_collection("photos", ["clip"])
    vectors = unit_vectors(200, 8)
    errors: list[BaseException] = []

    def writer(worker: int) -> None:
        try:
            for batch in range(10):
                keys = [(worker, batch, i) for i in range(5)]
                items = [
                    new_image(key, {"clip": vectors[(worker * 50 + batch * 5 + i) % 200]})
                    for i, key in enumerate(keys)
                ]
                added = catalog.add_images(collection.id, items)
                if batch % 3 == 0:
                    assert catalog.delete_images(collection.id, [added[0].id]) == [added[0].id]
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    deleted = 4 * 4  # batches 0, 3, 6, 9 of each writer
    assert catalog.count_images(collection.id) == 200 - deleted
    with catalog.engine.connect() as connection:
        seqs = [row[0] for row in connection.execute(text("SELECT seq FROM embeddings"))]
        seqs += [row[0] for row in connection.execute(text("SELECT seq FROM embedding_tombstones"))]
    # Every add and every delete got its own number; the deleted vectors' numbers went with them.
    assert len(set(seqs)) == len(seqs) == 200
    assert max(seqs) == catalog.collection_seq(collection.id) == 200 + deleted


def test_image_fields_are_declared_by_the_model_and_the_record_alone() -> None:
    """Rows become records (and new images rows) through ImageRecord's fields: they must match."""
    columns = {attribute.key for attribute in inspect(Image).column_attrs}
    assert {image_attribute(f.name) for f in dataclasses.fields(ImageRecord)} == columns
    extra = {f.name for f in dataclasses.fields(NewImage)} - set(IMAGE_FIELDS)
    assert extra == {"vectors"}  # everything else a new image brings is an image field


def test_source_paths_are_found_moved_and_touched_in_their_collection_only(
    catalog: Catalog, unit_vectors: UnitVectors, new_image: ImageFactory
) -> None:
    photos = catalog.create_collection("photos", ["clip"])
    other = catalog.create_collection("other", ["clip"])
    vectors = unit_vectors(4, 8)

    def at(key: int, path: str) -> NewImage:
        return new_image(key, {"clip": vectors[key]}, source_kind=SourceKind.PATH, source_uri=path)

    a, b = (o.id for o in catalog.add_images(photos.id, [at(0, "/p/a.jpg"), at(1, "/p/b.jpg")]))
    (elsewhere,) = (o.id for o in catalog.add_images(other.id, [at(2, "/p/a.jpg")]))
    # The same path in another collection (created later, so with a larger id) is not ours.
    assert [i.id for i in catalog.find_by_source(photos.id, "/p/a.jpg")] == [a]
    assert [i.id for i in catalog.list_images(photos.id)] == [a, b]
    found = catalog.images_at_sources(photos.id, ["/p/a.jpg", "/p/b.jpg", "/p/none.jpg"])
    assert {uri: [row.image_id for row in rows] for uri, rows in found.items()} == {
        "/p/a.jpg": [a],
        "/p/b.jpg": [b],
    }
    moved = SourceUpdate(a, "/q/a.jpg", "a.jpg", 10, 20)
    touched = SourceUpdate(b, "/p/b.jpg", "b.jpg", 11, 21)
    stranger = SourceUpdate(elsewhere, "/q/x.jpg", "x.jpg", 1, 1)  # not in this collection
    assert catalog.update_sources(photos.id, []) == 0
    assert catalog.update_sources(photos.id, [moved, touched, stranger]) == 2
    record = catalog.get_image(photos.id, a)
    assert (record.source_uri, record.original_name) == ("/q/a.jpg", "a.jpg")
    assert (record.source_size, record.source_mtime_ns) == (10, 20)
    assert catalog.get_image(other.id, elsewhere).source_uri == "/p/a.jpg"
    ours = sorted(catalog.get_image(photos.id, i).sha256 for i in (a, b))
    for page in (1, 2, 3):  # each image once, whether the last page is full or not
        assert sorted(catalog.iter_sha256(photos.id, page=page)) == ours
    # The later collection's own images only (ids of an earlier collection are not its).
    assert list(catalog.iter_sha256(other.id)) == [catalog.get_image(other.id, elsewhere).sha256]
    catalog.delete_collection("photos")
    assert catalog.update_sources(photos.id, [moved]) == 0  # a deleted collection: nothing to do


def test_bulk_writes_go_as_multi_row_inserts(
    catalog: Catalog, unit_vectors: UnitVectors, new_image: ImageFactory
) -> None:
    collection = catalog.create_collection("photos", ["clip", "dino"])
    vectors = unit_vectors(2500, 8)
    tables: list[str] = []

    def record(*args: object) -> None:  # (conn, cursor, statement, parameters, context, many)
        sql = str(args[2]).lstrip()
        if sql.upper().startswith("INSERT INTO"):
            tables.append(sql.split()[2])

    event.listen(catalog.engine, "before_cursor_execute", record)
    try:
        added = catalog.add_images(
            collection.id,
            [new_image(i, {"clip": vectors[i], "dino": vectors[-i - 1]}) for i in range(2500)],
        )
    finally:
        event.remove(catalog.engine, "before_cursor_execute", record)
    assert len(added) == 2500
    if catalog.engine.dialect.name == "sqlite":
        # The vectors: one prepared statement that SQLite runs row after row in-process.
        assert tables.count("embeddings") == 1
        return
    # PostgreSQL: 2,500 images and 5,000 vectors in pages of 1,000 rows, one round trip each.
    assert tables == ["images"] * 3 + ["embeddings"] * 5


def test_an_unreachable_server_is_reported_with_the_drivers_reason() -> None:
    """psycopg's message runs over lines (the reason, then its own hint): the reason is shown."""
    with socket.socket() as probe:  # a port nobody listens on: bound, never listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        url = f"postgresql+psycopg://vizdex@127.0.0.1:{port}/nothing"
        with pytest.raises(UnavailableError) as refused:
            Catalog.open(CatalogSettings(url))
    message = refused.value.message
    assert "cannot open the catalog database" in message and "Connection refused" in message


def test_vectors_are_stored_as_float16_and_unit_vectors_come_back_unit_length(
    catalog: Catalog, unit_vectors: UnitVectors, new_image: ImageFactory
) -> None:
    collection = catalog.create_collection("photos", ["clip"])
    vectors = unit_vectors(20, 512)
    catalog.add_images(collection.id, [new_image(i, {"clip": vectors[i]}) for i in range(20)])
    with catalog.engine.connect() as connection:
        sizes = {
            row[0] for row in connection.execute(text("SELECT length(vector) FROM embeddings"))
        }
    assert sizes == {2 * 512}  # half of float32's bytes
    _, stored = catalog.get_vectors(collection.id, "clip", list(range(1, 21)))
    assert stored.dtype == np.float32
    # A float16 copy's squared norm is off by ~1e-5; renormalised it is exact to float32, so a
    # vector still scores 1 against itself (what a duplicate at threshold 1 needs).
    np.testing.assert_allclose(np.sum(stored * stored, axis=1), 1.0, atol=1e-6)
    assert (np.sum(stored * vectors, axis=1) > 1 - 1e-6).all()


def test_only_unit_rows_are_renormalised_and_the_input_is_left_alone() -> None:
    rows = np.array([[0.6, 0.8, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.6, 0.801, 0.0]])
    given = rows.astype(np.float32)
    back = from_float16(given)
    assert back.dtype == np.float32 and back.flags.c_contiguous
    norms = np.linalg.norm(back, axis=1)
    np.testing.assert_allclose(norms[[0, 3]], 1.0, atol=1e-7)  # within the tolerance: unit
    np.testing.assert_array_equal(back[1:3], given[1:3])  # a norm of 3, or 0: as they were
    np.testing.assert_array_equal(given, rows.astype(np.float32))  # a copy was scaled, not it
    assert from_float16(np.zeros((0, 3), np.float16)).shape == (0, 3)


def test_a_vector_beyond_float16_range_is_refused(
    catalog: Catalog, new_image: ImageFactory
) -> None:
    collection = catalog.create_collection("photos", ["clip"])
    vector = np.ones(4, dtype=np.float32)
    vector[2] = 70_000.0
    with pytest.raises(InvalidInputError, match="float16"):
        catalog.add_images(collection.id, [new_image("x", {"clip": vector})])
    # Large but in range: kept as it was given, not renormalised.
    vector[2] = 60_000.0
    catalog.add_images(collection.id, [new_image("y", {"clip": vector})])
    _, stored = catalog.get_vectors(collection.id, "clip", [1, 2])
    np.testing.assert_allclose(stored[0], vector, rtol=1e-3)
