"""The services routes call instead of the catalog: collection reads, image files, jobs.

Real SQLite catalog and FAISS indexes in a temporary data directory; no models are needed
(vectors are given, and nothing is encoded).
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ImageFactory, UnitVectors
from tests.support.synthetic_photos import jpeg_bytes, make_photo
from vizdex.imaging.settings import ImageInputSettings
from vizdex.indexer import (
    DataStore,
    ImageFiles,
    IndexerSettings,
    JobsService,
    job_json,
    job_out,
)
from vizdex.search import (
    CollectionsService,
    ImageNotFoundError,
    JobFailure,
    JobNotFoundError,
    JobState,
    NewImage,
    SearchService,
    SearchSettings,
    SourceKind,
)

DIM = 8


@pytest.fixture
def search(search_settings: SearchSettings) -> Iterator[SearchService]:
    service = SearchService.open(search_settings, {})
    yield service
    service.close()


def _add(
    search: SearchService, new_image: ImageFactory, unit_vectors: UnitVectors, count: int
) -> list[int]:
    vectors = unit_vectors(count, DIM)
    added = search.add_images(
        "photos", [new_image(index, {"clip": vectors[index]}) for index in range(count)]
    )
    return [outcome.id for outcome in added]


def test_collection_reads(
    search: SearchService, new_image: ImageFactory, unit_vectors: UnitVectors
) -> None:
    search.catalog.create_collection("photos", ["clip"])
    search.catalog.create_collection("empty", ["clip"])
    ids = _add(search, new_image, unit_vectors, 5)
    reads = CollectionsService(search)

    summaries = {summary.record.name: summary for summary in reads.summaries()}
    assert {name: s.image_count for name, s in summaries.items()} == {"photos": 5, "empty": 0}
    assert all(summary.index_details is None for summary in summaries.values())
    assert reads.image_counts() == {"photos": 5, "empty": 0}

    described = reads.describe("photos")
    assert described.image_count == 5 and described.index_details is not None
    (index,) = described.index_details
    assert (index.model, index.count, index.dim) == ("clip", 5, DIM)

    first = reads.list_images("photos", after_id=0, limit=3)
    rest = reads.list_images("photos", after_id=first[-1].id, limit=3)
    assert [image.id for image in first + rest] == ids
    assert reads.get_image("photos", ids[2]) == first[2]
    with pytest.raises(ImageNotFoundError):
        reads.get_image("empty", ids[0])
    assert reads.database_reachable()


def _photo(folder: Path) -> tuple[Path, str]:
    folder.mkdir(parents=True, exist_ok=True)
    data = jpeg_bytes(make_photo(640, 480, seed=3))
    path = folder / "beach.jpg"
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def _folder_image(path: Path, sha: str, vector: np.ndarray, **fields: Any) -> NewImage:
    """The catalog row of the 640×480 folder photo ``_photo`` writes."""
    return NewImage(
        sha256=sha,
        width=640,
        height=480,
        format="JPEG",
        byte_size=path.stat().st_size,
        vectors={"clip": vector},
        source_kind=SourceKind.PATH,
        source_uri=str(path),
        **fields,
    )


def test_a_missing_thumbnail_is_made_once_and_recorded(
    search: SearchService, data_dir: Path, tmp_path: Path, unit_vectors: UnitVectors
) -> None:
    search.catalog.create_collection("photos", ["clip"])
    path, sha = _photo(tmp_path / "folder")
    image = _folder_image(path, sha, unit_vectors(1, DIM)[0], original_name=path.name)
    (added,) = search.add_images("photos", [image])  # as if added without the indexer
    store = DataStore(data_dir)
    files = ImageFiles(search, store, IndexerSettings(data_dir=data_dir), ImageInputSettings())

    original = files.original("photos", added.id)
    assert (original.path, original.filename, original.format) == (path, "beach.jpg", "JPEG")

    assert CollectionsService(search).get_image("photos", added.id).thumbnail_path is None
    thumbnail = files.thumbnail("photos", added.id)
    assert thumbnail == store.resolve(DataStore.thumbnail_name(sha)) and thumbnail.is_file()
    with Image.open(io.BytesIO(thumbnail.read_bytes())) as made:
        assert made.format == "WEBP" and max(made.size) == 256
    recorded = CollectionsService(search).get_image("photos", added.id)
    assert recorded.thumbnail_path == DataStore.thumbnail_name(sha)
    written = thumbnail.stat().st_mtime_ns
    assert files.thumbnail("photos", added.id) == thumbnail  # the stored one, not a new one
    assert thumbnail.stat().st_mtime_ns == written

    path.unlink()
    with pytest.raises(ImageNotFoundError) as missing:
        files.original("photos", added.id)
    assert missing.value.code == "file_missing"


def test_jobs_are_described_with_their_collection(search: SearchService) -> None:
    catalog = search.catalog
    kept = catalog.create_collection("kept", ["clip"])
    gone = catalog.create_collection("gone", ["clip"])
    first = catalog.create_job(kept.id, kind="upload", source=None, total=4)
    catalog.record_job_progress(first.id, done=1, skipped=1)
    second = catalog.create_job(gone.id, kind="folder", source="/photos", total=0)
    jobs = JobsService(search)

    described = jobs.describe(first.id)
    assert (described.collection, described.state, described.progress) == ("kept", "pending", 0.5)
    assert jobs.count_pending(up_to=10) == 2
    assert jobs.count_pending(up_to=1) == 1  # counts no further than asked

    catalog.delete_collection("gone")  # its jobs go with it
    with pytest.raises(JobNotFoundError):
        jobs.describe(second.id)


def test_the_cli_json_of_a_job_is_what_it_always_printed(search: SearchService) -> None:
    catalog = search.catalog
    collection = catalog.create_collection("photos", ["clip"])
    job = catalog.create_job(collection.id, kind="folder", source="/photos", total=3)
    catalog.set_job_state(job.id, JobState.RUNNING)
    catalog.record_job_progress(
        job.id, done=1, failures=[JobFailure("/photos/x.jpg", "corrupt", "bad JPEG")]
    )
    record = catalog.set_job_state(job.id, JobState.DONE)
    assert record.finished_at is not None

    def seconds(moment: datetime) -> str:
        return moment.isoformat(timespec="seconds")

    expected = {
        "id": record.id,
        "collection": "photos",
        "kind": "folder",
        "source": "/photos",
        "state": "done",
        "total": 3,
        "done": 1,
        "skipped": 0,
        "failed": 1,
        "error": None,
        "created_at": seconds(record.created_at),
        "updated_at": seconds(record.updated_at),
        "finished_at": seconds(record.finished_at),
        "failures": [{"item": "/photos/x.jpg", "code": "corrupt", "message": "bad JPEG"}],
    }
    printed = job_json(job_out(record, "photos"))
    assert printed == expected and list(printed) == list(expected)  # same keys, same order
    assert job_out(record, "photos").progress == 1.0  # the API's view adds progress


@pytest.mark.parametrize("what", ["folder", "fifo", "looping link"])
def test_what_is_not_a_file_where_a_thumbnail_belongs_is_moved_aside_and_remade(
    search: SearchService, data_dir: Path, tmp_path: Path, unit_vectors: UnitVectors, what: str
) -> None:
    """A folder there was served as the thumbnail (500 naming the server's path), a FIFO as an
    empty 200: the thumbnail is made again, and what stood there kept aside."""
    search.catalog.create_collection("photos", ["clip"])
    path, sha = _photo(tmp_path / "folder")
    image = _folder_image(
        path, sha, unit_vectors(1, DIM)[0], thumbnail_path=DataStore.thumbnail_name(sha)
    )
    (added,) = search.add_images("photos", [image])
    store = DataStore(data_dir)
    files = ImageFiles(search, store, IndexerSettings(data_dir=data_dir), ImageInputSettings())
    where = store.resolve(DataStore.thumbnail_name(sha))
    where.parent.mkdir(parents=True, exist_ok=True)
    if what == "folder":
        where.mkdir()
    elif what == "fifo":
        os.mkfifo(where)
    else:
        where.symlink_to(where.name)

    thumbnail = files.thumbnail("photos", added.id)
    assert thumbnail == where and thumbnail.is_file() and not thumbnail.is_symlink()
    with Image.open(io.BytesIO(thumbnail.read_bytes())) as made:
        assert made.format == "WEBP" and max(made.size) == 256
    assert [p.name.startswith(f"{sha}.webp.corrupt") for p in where.parent.iterdir()].count(
        True
    ) == 1
