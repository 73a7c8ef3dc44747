"""Ingestion end to end with tiny real models, a real SQLite catalog and real FAISS indexes."""

from __future__ import annotations

import io
import logging
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.ingest_helpers import Harness, photo_folder, set_mtime, sha256_of, write_photo
from tests.support.ingest_helpers import harness as harness  # the fixture
from tests.support.synthetic_photos import jpeg_bytes, make_photo
from vizdex.core.errors import ConflictError
from vizdex.encoders.streaming import EncodedBatch, draft_side
from vizdex.imaging import decode_file
from vizdex.imaging.settings import ImageInputSettings
from vizdex.indexer import (
    INTERRUPTED,
    Indexer,
    IngestRequest,
    JobFinishedError,
    ProgressSnapshot,
    Upload,
    cancel_job,
)
from vizdex.indexer.jobs import JobTracker, open_job
from vizdex.indexer.report import IngestReport
from vizdex.indexer.sources import Fresh, Item, Known, PathItem, Payload
from vizdex.indexer.writer import BatchWriter
from vizdex.search import JobRecord, JobState, NewImage, SourceKind


def _ingest(h: Harness, *paths: Path, prune: bool = False) -> IngestReport:
    request = IngestRequest(paths=tuple(str(p) for p in paths), prune=prune)
    return h.indexer.ingest(h.collection.name, request)


def test_a_folder_is_indexed_once_with_failures_isolated(harness: Harness, tmp_path: Path) -> None:
    root = tmp_path / "photos"
    files = photo_folder(root, 10)
    shutil.copy(files[3], root / "z-copy-of-3.jpg")  # after photo-003 in scan order
    (root / "broken.jpg").write_bytes(files[0].read_bytes()[:3000])
    (root / "notes.jpg").write_bytes(b"%PDF-1.7 not a photo")
    (root / "readme.txt").write_text("ignored: not an image extension")

    report = _ingest(harness, root)

    assert report.state is JobState.DONE
    assert (report.total, report.indexed, report.duplicates, report.failed) == (13, 10, 1, 2)
    assert {(f.item, f.code) for f in report.failures} == {
        (str(root / "broken.jpg"), "corrupt"),
        (str(root / "notes.jpg"), "unsupported_format"),
    }
    ids = harness.check()
    assert len(ids) == 10
    by_path = harness.by_path()
    assert sorted(by_path) == sorted(str(f) for f in files)
    for path in files:
        image = by_path[str(path)]
        assert image.sha256 == sha256_of(path)
        assert image.source_kind is SourceKind.PATH and image.original_name == path.name
        assert (image.width, image.height, image.format) == (320, 240, "JPEG")
        assert (image.source_size, image.source_mtime_ns) == (
            path.stat().st_size,
            path.stat().st_mtime_ns,
        )
        thumbnail = harness.indexer.store.thumbnail_file(image)
        assert thumbnail is not None
        with Image.open(thumbnail) as thumb:
            assert (thumb.format, thumb.size) == ("WEBP", (256, 192))
    job = harness.catalog.get_job(report.job_id)
    assert (job.state, job.kind, job.total, job.done, job.skipped, job.failed) == (
        JobState.DONE,
        "ingest",
        13,
        10,
        1,
        2,
    )
    assert {(f.item, f.code) for f in job.failures} == {(f.item, f.code) for f in report.failures}


def test_vectors_are_the_encoders_own(harness: Harness, tmp_path: Path) -> None:
    files = photo_folder(tmp_path / "photos", 5)
    _ingest(harness, tmp_path / "photos")
    by_path = harness.by_path()
    ids = [by_path[str(path)].id for path in files]
    encoders = list(harness.encoders.values())
    side = draft_side(encoders)
    images = [decode_file(path, ImageInputSettings(), min_side=side).image for path in files]
    for name, encoder in harness.encoders.items():
        stored, own = harness.vectors(name, ids), encoder.encode_images(images)
        # The catalog keeps float16 (about 3 significant digits): the same vectors, not the
        # same bits. A cosine this close to 1 is what no other image's vector would reach.
        cosines = np.sum(stored * own, axis=1) / np.linalg.norm(own, axis=1)
        assert cosines.min() > 1 - 1e-5
        assert np.allclose(stored, own, atol=1e-3)


def test_a_rescan_skips_unchanged_files_without_reading_them(
    harness: Harness, tmp_path: Path
) -> None:
    files = photo_folder(tmp_path / "photos", 6)
    _ingest(harness, tmp_path / "photos")
    seq = harness.seq()
    # Same size and mtime but other bytes: only a rescan that reads the file could notice.
    victim = files[2]
    info = victim.stat()
    data = bytearray(victim.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    victim.write_bytes(bytes(data))
    set_mtime(victim, info.st_mtime_ns)

    again = _ingest(harness, tmp_path / "photos")

    assert (again.unchanged, again.indexed, again.failed, again.total) == (6, 0, 0, 6)
    assert harness.seq() == seq  # nothing embedded, nothing deleted
    assert harness.catalog.get_job(again.job_id).skipped == 6


def test_a_changed_file_is_embedded_again_and_keeps_its_metadata(
    harness: Harness, tmp_path: Path
) -> None:
    files = photo_folder(tmp_path / "photos", 4)
    _ingest(harness, tmp_path / "photos")
    old = harness.by_path()[str(files[1])]
    harness.catalog.update_image(harness.collection.id, old.id, metadata={"album": "summer"})

    write_photo(files[1], seed=500)
    report = _ingest(harness, tmp_path / "photos")

    assert (report.indexed, report.unchanged, report.moved) == (1, 3, 0)
    new = harness.by_path()[str(files[1])]
    assert new.id != old.id and new.sha256 == sha256_of(files[1])
    assert new.metadata == {"album": "summer"}
    ids = harness.check()
    assert old.id not in ids and new.id in ids and len(ids) == 4


def test_a_touched_file_updates_its_stat_without_embedding(
    harness: Harness, tmp_path: Path
) -> None:
    files = photo_folder(tmp_path / "photos", 3)
    _ingest(harness, tmp_path / "photos")
    before = harness.by_path()[str(files[0])]
    seq = harness.seq()
    set_mtime(files[0], files[0].stat().st_mtime_ns + 5_000_000_000)

    report = _ingest(harness, tmp_path / "photos")

    assert (report.updated, report.unchanged, report.indexed) == (1, 2, 0)
    after = harness.by_path()[str(files[0])]
    assert after.id == before.id and after.source_mtime_ns == files[0].stat().st_mtime_ns
    assert harness.seq() == seq
    assert _ingest(harness, tmp_path / "photos").unchanged == 3


def test_a_moved_file_keeps_its_id_and_vectors(harness: Harness, tmp_path: Path) -> None:
    root = tmp_path / "photos"
    files = photo_folder(root, 5)
    _ingest(harness, root)
    before = harness.by_path()[str(files[4])]
    ids = harness.check()
    seq = harness.seq()
    target = root / "renamed" / "holiday.jpg"
    target.parent.mkdir()
    files[4].rename(target)

    report = _ingest(harness, root)

    assert (report.moved, report.indexed, report.unchanged) == (1, 0, 4)
    after = harness.by_path()[str(target)]
    assert after.id == before.id and after.original_name == "holiday.jpg"
    assert str(files[4]) not in harness.by_path()
    assert harness.seq() == seq  # not re-embedded
    assert harness.check() == ids


def test_prune_removes_vanished_files_under_the_given_folders_only(
    harness: Harness, tmp_path: Path
) -> None:
    first = photo_folder(tmp_path / "one", 3)
    second = photo_folder(tmp_path / "two", 3, seed=100)
    _ingest(harness, tmp_path / "one", tmp_path / "two")
    first[0].unlink()
    second[0].unlink()

    kept = _ingest(harness, tmp_path / "one")
    assert kept.pruned == 0 and len(harness.images()) == 6

    pruned = _ingest(harness, tmp_path / "one", prune=True)
    assert pruned.pruned == 1
    paths = set(harness.by_path())
    assert str(first[0]) not in paths and str(second[0]) in paths
    assert len(harness.check()) == 5


def test_leftovers_of_a_crash_between_writes_are_settled(harness: Harness, tmp_path: Path) -> None:
    """A changed file whose new row committed but whose old row was not deleted yet."""
    files = photo_folder(tmp_path / "photos", 3)
    _ingest(harness, tmp_path / "photos")
    old = harness.by_path()[str(files[0])]
    write_photo(files[0], seed=900)
    info = files[0].stat()
    vectors = {
        model: harness.vectors(model, [harness.by_path()[str(files[1])].id])[0]
        for model in harness.collection.models
    }
    harness.catalog.add_images(
        harness.collection.id,
        [
            NewImage(
                sha256=sha256_of(files[0]),
                width=320,
                height=240,
                format="JPEG",
                byte_size=info.st_size,
                vectors=vectors,
                source_kind=SourceKind.PATH,
                source_uri=str(files[0]),
                source_size=info.st_size,
                source_mtime_ns=info.st_mtime_ns,
            )
        ],
    )
    assert len([i for i in harness.images() if i.source_uri == str(files[0])]) == 2

    report = _ingest(harness, tmp_path / "photos")

    assert report.unchanged == 3
    at_path = [i for i in harness.images() if i.source_uri == str(files[0])]
    assert len(at_path) == 1 and at_path[0].id != old.id
    assert len(harness.check()) == 3


def test_uploads_store_originals_and_report_each_image(harness: Harness) -> None:
    photo = jpeg_bytes(make_photo(400, 300, seed=7))
    png = io.BytesIO()
    make_photo(200, 100, seed=8).save(png, format="PNG")
    request = IngestRequest(
        uploads=(
            Upload(photo, name="cat.jpg", metadata={"owner": "ann"}),
            Upload(png.getvalue(), name="dog.png"),
            Upload(b"GIF89a broken", name="bad.gif"),
            Upload(photo, name="cat-again.jpg"),
        )
    )
    report = harness.indexer.ingest(harness.collection.name, request)

    statuses = [(o.index, o.name, o.status, o.code) for o in report.uploads]
    assert statuses == [
        (0, "cat.jpg", "indexed", None),
        (1, "dog.png", "indexed", None),
        (2, "bad.gif", "failed", "corrupt"),
        (3, "cat-again.jpg", "duplicate", None),
    ]
    assert report.uploads[3].image_id == report.uploads[0].image_id
    cat = harness.catalog.get_image(harness.collection.id, report.uploads[0].image_id or 0)
    assert cat.source_kind is SourceKind.UPLOAD and cat.source_uri is None
    assert (cat.original_name, cat.metadata) == ("cat.jpg", {"owner": "ann"})
    original = harness.indexer.store.image_file(cat)
    assert original is not None and original.read_bytes() == photo
    assert original.name == f"{cat.sha256}.jpg"
    assert harness.catalog.get_job(report.job_id).kind == "upload"
    assert len(harness.check()) == 2


def test_submit_returns_at_once_and_the_job_is_readable_while_it_runs(
    harness: Harness, tmp_path: Path
) -> None:
    photo_folder(tmp_path / "photos", 12)
    seen: list[tuple[JobState, int, int]] = []
    job_ids: list[int] = []
    started = threading.Event()

    def progress(snapshot: ProgressSnapshot) -> None:
        started.wait(10)
        if snapshot.processed and not seen:
            job = harness.catalog.get_job(job_ids[0])
            seen.append((job.state, job.done, job.total))

    request = IngestRequest(paths=(str(tmp_path / "photos"),))
    job = harness.indexer.submit(harness.collection.name, request, progress=progress)
    job_ids.append(job.id)
    started.set()
    assert job.state is JobState.PENDING
    report = harness.indexer.wait(job.id, timeout=120)

    assert report.state is JobState.DONE and report.indexed == 12
    ((state, done, total),) = seen
    assert state is JobState.RUNNING and 0 < done < 12 and total == 12
    assert harness.catalog.get_job(job.id).state is JobState.DONE


def _cancel_after_first_progress(
    harness: Harness, folder: Path, cancel: Callable[[int], object]
) -> tuple[JobRecord, IngestReport, int]:
    """Ingests 12 photos of ``folder`` and calls ``cancel(job_id)`` from the first progress
    report that counts a processed image; returns the job, its report and that count."""
    photo_folder(folder, 12)
    job_ids: list[int] = []
    at_cancel: list[int] = []
    ready = threading.Event()

    def progress(snapshot: ProgressSnapshot) -> None:
        ready.wait(10)
        if snapshot.processed and not at_cancel:
            at_cancel.append(snapshot.processed)
            cancel(job_ids[0])

    request = IngestRequest(paths=(str(folder),))
    job = harness.indexer.submit(harness.collection.name, request, progress=progress)
    job_ids.append(job.id)
    ready.set()
    report = harness.indexer.wait(job.id, timeout=120)
    return job, report, at_cancel[0]


def test_a_cancelled_job_stops_and_a_rerun_finishes_it(harness: Harness, tmp_path: Path) -> None:
    job, report, at_cancel = _cancel_after_first_progress(
        harness, tmp_path / "photos", lambda job_id: harness.indexer.cancel(job_id)
    )

    # The first batch (at most batch_size=4; smaller when the model started on what was ready)
    # was written when the cancel came; the ones queued behind it are dropped.
    assert report.state is JobState.CANCELLED and report.indexed == at_cancel <= 4
    assert harness.catalog.get_job(job.id).state is JobState.CANCELLED
    rest = _ingest(harness, tmp_path / "photos")
    assert (rest.indexed, rest.unchanged) == (12 - report.indexed, report.indexed)
    assert len(harness.check()) == 12


def test_a_job_cancelled_from_another_process_stops_at_its_next_write(
    harness: Harness, tmp_path: Path
) -> None:
    """Only the catalog says so (as ``vizdex jobs --cancel`` in a shell would): the runner finds
    out when it next records progress, and stops there."""
    job, report, at_cancel = _cancel_after_first_progress(
        harness,
        tmp_path / "photos",
        lambda job_id: cancel_job(harness.catalog, harness.indexer.store, job_id),
    )

    # The batch being written when the cancel came is recorded, and it says stop: at most the
    # one in flight behind it (batch_size=4) is written too.
    assert report.state is JobState.CANCELLED and report.indexed <= at_cancel + 4 < 12
    assert harness.catalog.get_job(job.id).state is JobState.CANCELLED
    rest = _ingest(harness, tmp_path / "photos")
    assert (rest.indexed, rest.unchanged) == (12 - report.indexed, report.indexed)
    assert len(harness.check()) == 12


def test_a_job_cancelled_while_it_waits_never_starts(harness: Harness, tmp_path: Path) -> None:
    photo_folder(tmp_path / "first", 4)
    photo_folder(tmp_path / "second", 4)
    release = threading.Event()

    def hold(snapshot: ProgressSnapshot) -> None:
        release.wait(30)  # the first job holds the only runner until the second is cancelled

    first = harness.indexer.submit(
        harness.collection.name, IngestRequest(paths=(str(tmp_path / "first"),)), progress=hold
    )
    second = harness.indexer.submit(
        harness.collection.name, IngestRequest(paths=(str(tmp_path / "second"),))
    )
    try:
        assert cancel_job(harness.catalog, harness.indexer.store, second.id).state is (
            JobState.CANCELLED
        )
    finally:
        release.set()
    assert harness.indexer.wait(first.id, timeout=120).indexed == 4
    waited = harness.indexer.wait(second.id, timeout=120)
    assert (waited.state, waited.indexed) == (JobState.CANCELLED, 0)
    assert harness.catalog.get_job(second.id).state is JobState.CANCELLED
    with pytest.raises(JobFinishedError):
        cancel_job(harness.catalog, harness.indexer.store, first.id)


def test_an_interrupted_job_is_marked_and_the_rerun_completes(
    harness: Harness, tmp_path: Path
) -> None:
    photo_folder(tmp_path / "photos", 4)
    dead = harness.catalog.create_job(
        harness.collection.id, kind="ingest", source=str(tmp_path / "photos")
    )
    harness.catalog.set_job_state(dead.id, JobState.RUNNING)  # no process holds its lock

    report = _ingest(harness, tmp_path / "photos")

    assert report.state is JobState.DONE and report.indexed == 4
    interrupted = harness.catalog.get_job(dead.id)
    assert interrupted.state is JobState.FAILED and interrupted.error == INTERRUPTED


def test_the_same_ingestion_running_elsewhere_is_refused(harness: Harness, tmp_path: Path) -> None:
    photo_folder(tmp_path / "photos", 2)
    request = IngestRequest(paths=(str(tmp_path / "photos"),))
    locks = harness.indexer._locks
    _, lease, _ = open_job(
        harness.catalog, locks, harness.collection.id, kind="ingest", source=request.describe()
    )
    with pytest.raises(ConflictError, match="already running"):
        harness.indexer.ingest(harness.collection.name, request)
    lease.release()
    assert harness.indexer.ingest(harness.collection.name, request).indexed == 2


def test_an_image_deleted_while_in_flight_is_retried(harness: Harness, tmp_path: Path) -> None:
    path = write_photo(tmp_path / "photos" / "a.jpg", seed=1)
    job = harness.catalog.create_job(harness.collection.id, kind="ingest")
    report = IngestReport(job_id=job.id, collection=harness.collection.name)
    writer = BatchWriter(
        catalog=harness.catalog,
        indexes=harness.indexes,
        collection=harness.collection,
        model_keys=list(harness.encoders),
        report=report,
        tracker=JobTracker(harness.catalog, job.id),
    )
    item = PathItem(str(path), size=1, mtime_ns=1)
    batch: EncodedBatch[Item, Payload] = EncodedBatch(passed=[(item, Known("0" * 64, 999))])
    writer.write(batch)
    assert writer.retry == [item]
    assert (report.moved, report.duplicates, report.updated, report.unchanged) == (0, 0, 0, 0)


def test_unreadable_inputs_fail_alone(harness: Harness, tmp_path: Path) -> None:
    root = tmp_path / "photos"
    write_photo(root / "ok.jpg", seed=3)
    (root / "empty.jpg").write_bytes(b"")
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)  # a scan never picks it up; a listed one must not hang the reader
    listing = tmp_path / "list.txt"
    listing.write_text(f"{fifo}\n")
    request = IngestRequest(paths=(str(root),), files_from=str(listing))
    report = harness.indexer.ingest(harness.collection.name, request)
    assert (report.total, report.indexed) == (3, 1)
    assert {(Path(f.item).name, f.code) for f in report.failures} == {
        ("empty.jpg", "empty"),
        ("pipe.jpg", "not_found"),
    }


def test_refusals_from_the_door_keep_their_codes(harness: Harness, tmp_path: Path) -> None:
    big = tmp_path / "photos" / "big.jpg"
    write_photo(big, seed=4, size=(900, 700))
    noise = np.random.default_rng(5).integers(0, 256, size=(400, 600, 3), dtype=np.uint8)
    Image.fromarray(noise).save(big.parent / "huge-file.png")  # ~700 kB, 0.24 MP
    door = ImageInputSettings(max_pixels=500_000, max_bytes=300_000)
    strict = Indexer(harness.catalog, harness.indexes, harness.encoders, harness.settings, door)
    report = strict.ingest(harness.collection.name, IngestRequest(paths=(str(big.parent),)))
    assert sorted((Path(f.item).name, f.code) for f in report.failures) == [
        ("big.jpg", "too_many_pixels"),
        ("huge-file.png", "too_large"),
    ]


def test_an_image_with_invalid_vectors_fails_alone(harness: Harness, tmp_path: Path) -> None:
    job = harness.catalog.create_job(harness.collection.id, kind="ingest")
    report = IngestReport(job_id=job.id, collection=harness.collection.name)
    writer = BatchWriter(
        catalog=harness.catalog,
        indexes=harness.indexes,
        collection=harness.collection,
        model_keys=list(harness.encoders),
        report=report,
        tracker=JobTracker(harness.catalog, job.id),
    )
    items: list[Item] = [PathItem(str(tmp_path / name)) for name in ("good.jpg", "bad.jpg")]
    payloads: list[Payload] = [
        Fresh(sha, 10, 10, "JPEG", 100, f"thumbs/{sha[:2]}/{sha}.webp")
        for sha in ("a" * 64, "b" * 64)
    ]
    vectors = {}
    for name, encoder in harness.encoders.items():
        matrix = np.ones((2, encoder.dim), dtype=np.float32) / np.sqrt(encoder.dim)
        matrix[1, 0] = np.nan if name == harness.collection.models[-1] else matrix[1, 0]
        vectors[name] = matrix
    writer.write(EncodedBatch(items=items, payloads=payloads, vectors=vectors))
    assert (report.indexed, report.failed) == (1, 1)
    assert [(f.item, f.code) for f in report.failures] == [
        (str(tmp_path / "bad.jpg"), "encode_failed")
    ]
    assert [image.sha256 for image in harness.images()] == ["a" * 64]
    harness.check()


def test_an_upload_does_not_wait_for_a_background_job(harness: Harness, tmp_path: Path) -> None:
    photo_folder(tmp_path / "photos", 16)
    uploaded: list[IngestReport] = []

    def progress(snapshot: ProgressSnapshot) -> None:
        # Runs while the background job is mid-way (its writer waits for this callback): with
        # one-job-at-a-time locking this upload would deadlock instead of finishing.
        if snapshot.processed and not uploaded:
            photo = jpeg_bytes(make_photo(300, 200, seed=77))
            request = IngestRequest(uploads=(Upload(photo, name="now.jpg"),))
            uploaded.append(harness.indexer.ingest(harness.collection.name, request))

    request = IngestRequest(paths=(str(tmp_path / "photos"),))
    job = harness.indexer.submit(harness.collection.name, request, progress=progress)
    background = harness.indexer.wait(job.id, timeout=120)

    assert background.indexed == 16 and uploaded[0].indexed == 1
    assert uploaded[0].job_id > job.id  # started after the background job, finished before it
    assert len(harness.check()) == 17


def test_a_job_logs_where_its_time_went(
    harness: Harness, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_photo(tmp_path / "photos" / "a.jpg", seed=11)
    request = IngestRequest(paths=(str(tmp_path / "photos"),))
    with caplog.at_level(logging.INFO, logger="vizdex.indexer.pipeline"):
        harness.indexer.ingest(harness.collection.name, request)
    (record,) = [r for r in caplog.records if hasattr(r, "stage_seconds")]
    stages: dict[str, float] = record.stage_seconds
    expected = {"model forward", "thumbnails", "catalog write", "index update", "index snapshot"}
    assert expected <= set(stages)
    assert all(seconds >= 0 for seconds in stages.values())
    assert "stage seconds: " in record.getMessage()
