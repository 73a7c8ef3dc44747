"""The indexer's small parts alone: discovery, thumbnails, storage, progress, job locks, stream."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import time
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.synthetic_photos import jpeg_bytes, make_photo
from vizdex.cli.main import main
from vizdex.core.errors import (
    ImageRejectedError,
    InvalidInputError,
    NotFoundError,
    UnavailableError,
)
from vizdex.encoders.base import Encoder
from vizdex.encoders.streaming import encode_stream
from vizdex.imaging.settings import ImageInputSettings
from vizdex.indexer import (
    DataStore,
    IndexerSettings,
    IngestRequest,
    JobLocks,
    ProgressSnapshot,
    TextProgress,
    Upload,
    make_thumbnail,
    reap_interrupted,
    render,
    resolve_inputs,
    walk_folder,
)
from vizdex.indexer.dedupe import ShaFilter
from vizdex.indexer.discovery import count, discover
from vizdex.indexer.jobs import INTERRUPTED, JobTracker, close_job, open_job
from vizdex.indexer.loading import ItemLoader
from vizdex.indexer.sources import Fresh, PathItem
from vizdex.indexer.storage import RESERVE_BYTES
from vizdex.indexer.thumbnail_sink import ThumbnailSink
from vizdex.search import Catalog, JobState

# -- discovery ---------------------------------------------------------------------------------


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_walk_is_recursive_sorted_and_filtered(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for name in ["b.JPG", "a.png", "c.txt", "sub/z.jpeg", "sub/deeper/y.webp", "A/x.gif"]:
        _touch(root / name)
    _touch(root / ".hidden.jpg")
    _touch(root / ".cache" / "k.jpg")
    found = list(walk_folder(str(root), IndexerSettings(tmp_path).extensions))
    relative = [os.path.relpath(path, root) for path in found]
    # A folder's files first (sorted), then its subfolders (sorted), depth first.
    assert relative == ["a.png", "b.JPG", "A/x.gif", "sub/z.jpeg", "sub/deeper/y.webp"]
    with_hidden = walk_folder(str(root), ["jpg"], include_hidden=True)
    assert sorted(os.path.relpath(p, root) for p in with_hidden) == [
        ".cache/k.jpg",
        ".hidden.jpg",
        "b.JPG",
    ]


def test_symlinks_are_followed_only_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    outside = _touch(tmp_path / "outside" / "secret.jpg")
    inside = _touch(root / "album" / "real.jpg")
    (root / "link-out.jpg").symlink_to(outside)
    (root / "dir-out").symlink_to(outside.parent, target_is_directory=True)
    (root / "views").mkdir()
    (root / "views" / "best.jpg").symlink_to(inside)
    (root / "views" / "loop").symlink_to(root, target_is_directory=True)
    (root / "album-link").symlink_to(root / "album", target_is_directory=True)
    found = list(walk_folder(str(root), ["jpg"]))
    # Reported by real path; the out-of-root links are skipped; the loop and the folder link
    # do not make the walk visit a folder twice.
    assert found.count(str(inside)) == 2  # directly, and through views/best.jpg
    assert all(path.startswith(str(root) + os.sep) for path in found)
    assert len(found) == 2


def test_resolve_inputs_separates_files_and_folders(tmp_path: Path) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    image = _touch(tmp_path / "one.bin")
    listing = _touch(tmp_path / "list.txt", f"{image}\n\nrelative.jpg\n".encode())
    inputs = resolve_inputs([str(folder), str(image)], str(listing))
    assert inputs.folders == (str(folder),) and inputs.files == (str(image),)
    # Named and listed files are tried whatever their extension; relative lines are relative
    # to the list's folder.
    assert list(discover(inputs, ["jpg"])) == [
        str(image),
        str(image),
        str(tmp_path / "relative.jpg"),
    ]
    assert count(inputs, ["jpg"]) == 3
    with pytest.raises(NotFoundError, match="no file or folder"):
        resolve_inputs([str(tmp_path / "missing")])


def test_request_validation_and_description(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="nothing to ingest"):
        IngestRequest()
    with pytest.raises(ImageRejectedError, match="not a valid URL") as malformed:
        IngestRequest(urls=("http://[::1/",))  # the request's syntax: refused whole
    assert malformed.value.code == "invalid_url"
    # Another scheme is the fetch policy's to refuse, item by item (forbidden_url).
    assert IngestRequest(urls=("ftp://example.com/a.jpg",)).urls == ("ftp://example.com/a.jpg",)
    request = IngestRequest(paths=(str(tmp_path),), prune=True)
    assert request.kind == "ingest" and request.describe() == f"{tmp_path} (prune)"
    uploads = IngestRequest(uploads=(Upload(b"x"), Upload(b"y")))
    assert uploads.kind == "upload" and uploads.describe() == "2 uploads"


def test_settings_from_env(tmp_path: Path) -> None:
    env = {
        "VIZDEX_DATA_DIR": str(tmp_path),
        "VIZDEX_INGEST_EXTENSIONS": ".JPG, png",
        "VIZDEX_THUMBNAIL_SIZE": "128",
        "VIZDEX_DECODE_WORKERS": "3",
    }
    settings = IndexerSettings.from_env(env)
    assert settings.data_dir == tmp_path
    assert settings.extensions == ("jpg", "png")
    assert (settings.thumbnail_size, settings.workers) == (128, 3)
    with pytest.raises(InvalidInputError, match="thumbnail size"):
        IndexerSettings(tmp_path, thumbnail_size=4)


@pytest.mark.parametrize(
    ("lease", "said"),
    [
        ("0", "worker lease must be more than 0"),
        ("-1", "worker lease must be more than 0"),
        ("1e12", "worker lease must be more than 0 and at most 86400"),
        # Refused where the variable is read (every float setting refuses them), naming it.
        ("nan", "VIZDEX_WORKER_LEASE_S must be a finite number"),
        ("inf", "VIZDEX_WORKER_LEASE_S must be a finite number"),
    ],
)
def test_a_worker_lease_must_be_finite_and_at_most_a_day(
    tmp_path: Path, lease: str, said: str
) -> None:
    # inf, NaN and 1e12 s overflowed the lease end at every claim: a worker ran, logging a
    # traceback each poll, and never ran a chunk (with --until-idle it exited 0 at once).
    with pytest.raises(InvalidInputError, match=said):
        IndexerSettings.from_env({"VIZDEX_DATA_DIR": str(tmp_path), "VIZDEX_WORKER_LEASE_S": lease})
    for bad in (float("nan"), float("inf")):  # given in code: the settings' own check
        with pytest.raises(InvalidInputError, match="worker lease must be more than 0"):
            IndexerSettings(tmp_path, worker_lease_s=bad)
    assert IndexerSettings(tmp_path, worker_lease_s=86400.0).worker_lease_s == 86400.0


@pytest.mark.parametrize(
    "flag", [["--lease", "inf"], ["--lease", "nan"], ["--poll", "nan"], ["--poll", "inf"]]
)
def test_worker_refuses_a_lease_or_poll_it_cannot_use(
    tmp_path: Path, flag: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # Refused as a usage error by the flag's own type (finite_float), before loading anything:
    # exit status 2 as from a shell, raised in-process as argparse does.
    with pytest.raises(SystemExit) as usage:
        main(["worker", "--data-dir", str(tmp_path), *flag])
    assert usage.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and flag[0].strip("-") in error, error


# -- thumbnails and storage --------------------------------------------------------------------


def test_thumbnail_fits_256_and_keeps_aspect() -> None:
    wide = make_thumbnail(make_photo(1000, 750, seed=1))
    with Image.open(io.BytesIO(wide)) as image:
        assert (image.format, image.size) == ("WEBP", (256, 192))
    tall = make_thumbnail(make_photo(300, 900, seed=2), longest=128)
    with Image.open(io.BytesIO(tall)) as image:
        assert image.size == (43, 128)
    small = make_thumbnail(make_photo(100, 80, seed=3))
    with Image.open(io.BytesIO(small)) as image:
        assert image.size == (100, 80)  # never enlarged


def test_store_is_content_addressed_and_atomic(tmp_path: Path) -> None:
    store = DataStore(tmp_path / "data")
    sha = "ab" + "0" * 62
    name = store.put_thumbnail(sha, make_photo(640, 480, seed=4))
    assert name == f"thumbs/ab/{sha}.webp"
    first = store.resolve(name).read_bytes()
    again = store.put_thumbnail(sha, make_photo(640, 480, seed=99))
    assert again == name and store.resolve(name).read_bytes() == first  # same name, not redone
    original = store.put_original(sha, "PNG", b"png bytes")
    assert original == f"originals/ab/{sha}.png"
    assert store.resolve(original).read_bytes() == b"png bytes"
    assert list(store.temp_dir.iterdir()) == []  # nothing left half-written
    with pytest.raises(ValueError, match="outside"):
        store.resolve("../catalog.db")


# What stands where one of the data directory's folders belongs. Found by the second adversarial
# run: a file, a FIFO or a broken link at thumbs/, tmp/ or originals/ made every upload (and
# thumbnail) a 500, one at locks/ stopped the server's start with a traceback, and thumbnails
# kept on another disk through a link were refused as "outside the data directory".


def _stand_in(path: Path, kind: str) -> None:
    """Put ``kind`` where the folder ``path`` belongs (its parent exists)."""
    if kind == "file":
        path.write_bytes(b"not a folder")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "loop":
        path.symlink_to(path)
    else:  # a link to a folder that is not there (another disk, not mounted)
        path.symlink_to(path.parent / "unmounted" / "disk")


STAND_INS = ["file", "fifo", "loop", "broken-link"]


@pytest.mark.parametrize("kind", STAND_INS)
@pytest.mark.parametrize("folder", ["tmp", "thumbs", "locks"])
def test_what_stands_where_a_scratch_folder_belongs_is_moved_aside(
    tmp_path: Path, folder: str, kind: str
) -> None:
    store = DataStore(tmp_path)
    _stand_in(tmp_path / folder, kind)
    store.prepare()
    assert (tmp_path / folder).is_dir() and not (tmp_path / folder).is_symlink()
    assert os.path.lexists(tmp_path / f"{folder}.corrupt")  # kept for a person to look at
    sha = "cd" + "1" * 62
    assert store.resolve(store.put_thumbnail(sha, make_photo(64, 48, seed=1))).is_file()
    # Replaced again while running: the next write makes it again.
    shutil.rmtree(tmp_path / folder)
    _stand_in(tmp_path / folder, kind)
    assert store.resolve(store.put_thumbnail("ef" + sha[2:], make_photo(64, 48))).is_file()


@pytest.mark.parametrize("kind", STAND_INS)
def test_originals_that_are_not_a_folder_stop_with_the_reason(tmp_path: Path, kind: str) -> None:
    """The only copy of every upload: never moved aside, and never made again elsewhere."""
    store = DataStore(tmp_path)
    _stand_in(tmp_path / "originals", kind)
    for attempt in (store.prepare, lambda: store.put_original("ab" + "0" * 62, "PNG", b"x")):
        with pytest.raises(UnavailableError, match="originals should be a folder but is"):
            attempt()
    assert not os.path.lexists(tmp_path / "originals.corrupt")


def test_folders_kept_elsewhere_through_links_are_used(tmp_path: Path) -> None:
    elsewhere = tmp_path / "other-disk"
    for folder in ("thumbs", "originals"):
        (elsewhere / folder).mkdir(parents=True)
        (tmp_path / "data" / folder).parent.mkdir(exist_ok=True)
        (tmp_path / "data" / folder).symlink_to(elsewhere / folder)
    store = DataStore(tmp_path / "data")
    store.prepare()
    sha = "ab" + "2" * 62
    thumbnail = store.resolve(store.put_thumbnail(sha, make_photo(64, 48)))
    original = store.resolve(store.put_original(sha, "PNG", b"png bytes"))
    assert thumbnail.read_bytes()[:4] == b"RIFF" and original.read_bytes() == b"png bytes"
    assert (elsewhere / "originals" / "ab" / f"{sha}.png").is_file()
    for name in ("../catalog.db", "/etc/passwd", "thumbs/../../x", ""):
        with pytest.raises(ValueError, match="outside"):
            store.resolve(name)


@pytest.mark.parametrize("kind", ["folder", "loop", "broken-link"])
def test_a_lock_file_that_is_not_a_file_is_moved_aside(tmp_path: Path, kind: str) -> None:
    locks = JobLocks(tmp_path / "locks")
    (tmp_path / "locks").mkdir()
    for name in ("jobs.lock", "job-7.lock"):
        path = tmp_path / "locks" / name
        path.mkdir() if kind == "folder" else _stand_in(path, kind)
    assert not locks.is_held(7)
    with locks.registry():
        pass
    lease = locks.hold(7)
    assert locks.is_held(7)
    lease.release()
    assert os.path.lexists(tmp_path / "locks" / "jobs.lock.corrupt")


def test_sweep_removes_only_old_temporaries(tmp_path: Path) -> None:
    store = DataStore(tmp_path)
    store.temp_dir.mkdir(parents=True)
    old = _touch(store.temp_dir / "x.webp.1.tmp")
    young = _touch(store.temp_dir / "y.webp.2.tmp")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert store.sweep_temporaries() == 1
    assert not old.exists() and young.exists()


def test_the_reserve_is_real_space_given_back_and_taken_again(tmp_path: Path) -> None:
    store = DataStore(tmp_path)
    assert store.keep_reserve() == RESERVE_BYTES
    stat = store.reserve_file.stat()
    assert stat.st_size == RESERVE_BYTES and stat.st_blocks * 512 >= RESERVE_BYTES  # not sparse
    assert store.keep_reserve() == RESERVE_BYTES  # kept as it is
    assert store.release_reserve() and not store.reserve_file.exists()
    assert not store.release_reserve()  # nothing left to give
    _touch(store.reserve_file, bytes(RESERVE_BYTES // 3))  # what a full disk left of it
    assert store.keep_reserve() == RESERVE_BYTES
    assert store.reserve_file.stat().st_blocks * 512 >= RESERVE_BYTES


# -- progress ----------------------------------------------------------------------------------


def test_render_shows_rate_eta_and_counts() -> None:
    snapshot = ProgressSnapshot(total=200, indexed=40, skipped=8, failed=2, elapsed_s=5.0)
    line = render(snapshot, width=10)
    assert line == "[##--------] 50/200  25%    10.0 img/s  ETA 15s  (8 skipped, 2 failed)"
    done = ProgressSnapshot(total=10, indexed=10, skipped=0, failed=0, elapsed_s=125.0)
    assert "ETA 0s" in render(done) and "100%" in render(done)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_text_progress_redraws_on_a_tty_and_writes_lines_otherwise() -> None:
    snapshot = ProgressSnapshot(total=4, indexed=1, skipped=0, failed=0, elapsed_s=1.0)
    clock = _Clock()
    tty = io.StringIO()
    bar = TextProgress(tty, tty=True, interval_s=1.0, clock=clock)
    bar(snapshot)
    bar(snapshot)  # too soon: not drawn
    clock.now = 2.0
    bar(snapshot)
    bar.finish(snapshot)
    assert tty.getvalue().count("\r") == 3 and tty.getvalue().endswith("\n")
    assert "\n" not in tty.getvalue()[:-1]
    broken = io.StringIO()
    interrupted = TextProgress(broken, tty=True, clock=clock)
    interrupted.abort()  # nothing drawn: nothing to end
    interrupted(snapshot)
    interrupted.abort()  # the error message must not start on the bar's line
    assert broken.getvalue().endswith("\n") and broken.getvalue().count("\n") == 1
    log = io.StringIO()
    lines = TextProgress(log, tty=False, interval_s=10.0, clock=clock)
    lines(snapshot)
    clock.now = 5.0
    lines(snapshot)
    lines.finish(snapshot)
    assert "\r" not in log.getvalue() and log.getvalue().count("\n") == 2


# -- jobs --------------------------------------------------------------------------------------


def test_job_locks_tell_live_jobs_from_dead_ones(tmp_path: Path, catalog: Catalog) -> None:
    locks = JobLocks(tmp_path / "locks")
    collection = catalog.create_collection("c", ["m"])
    job, lease, reaped = open_job(catalog, locks, collection.id, kind="ingest", source="/x")
    assert reaped == [] and locks.is_held(job.id)
    # A job row with no process behind it (what a SIGKILL leaves): reaped, the live one kept.
    dead = catalog.create_job(collection.id, kind="ingest", source="/y")
    catalog.set_job_state(dead.id, JobState.RUNNING)
    assert reap_interrupted(catalog, locks) == [dead.id]
    gone = catalog.get_job(dead.id)
    assert gone.state is JobState.FAILED and gone.error == INTERRUPTED
    assert catalog.get_job(job.id).state is JobState.PENDING
    with pytest.raises(Exception, match="already running as job"):
        open_job(catalog, locks, collection.id, kind="ingest", source="/x")
    finished = close_job(catalog, locks, lease, JobState.DONE)
    assert finished.state is JobState.DONE and not locks.is_held(job.id)
    assert not locks.path_for(job.id).exists()
    assert reap_interrupted(catalog, locks) == []


def test_tracker_batches_progress_writes(catalog: Catalog) -> None:
    collection = catalog.create_collection("c", ["m"])
    job = catalog.create_job(collection.id, kind="ingest")
    clock = _Clock()
    tracker = JobTracker(catalog, job.id, interval_s=1.0, clock=clock)
    tracker.set_total(10)
    tracker.add(done=2)
    tracker.add(skipped=1)
    assert (catalog.get_job(job.id).done, catalog.get_job(job.id).total) == (0, 10)
    clock.now = 1.5
    tracker.add(done=1)
    record = catalog.get_job(job.id)
    assert (record.done, record.skipped) == (3, 1)


# -- the stream's pass-through -----------------------------------------------------------------


def test_stream_passes_items_with_nothing_to_encode(clip_encoder: Encoder) -> None:
    def load(index: int, min_side: int | None) -> tuple[Image.Image | None, int]:
        if index % 3 == 0:
            return None, -index
        return Image.new("RGB", (64, 64), (index, 0, 0)), index

    batches = list(
        encode_stream(range(12), [clip_encoder], load, batch_size=4, workers=2, min_batch=4)
    )
    assert [b.items for b in batches] == [[1, 2, 4, 5], [7, 8, 10, 11]]
    assert [item for b in batches for item, _ in b.passed] == [0, 3, 6, 9]
    assert [payload for b in batches for _, payload in b.passed] == [0, -3, -6, -9]
    assert all(b.vectors[clip_encoder.name].shape == (4, clip_encoder.dim) for b in batches)
    # A long run of pass-throughs is cut into bounded batches, not held in one.
    only = list(encode_stream(range(40), [clip_encoder], lambda i, s: (None, i), batch_size=2))
    assert [len(b.passed) for b in only] == [8, 8, 8, 8, 8]
    assert all(b.vectors[clip_encoder.name].shape == (0, clip_encoder.dim) for b in only)
    assert np.array_equal(np.concatenate([[i for i, _ in b.passed] for b in only]), np.arange(40))


# -- dedupe filter -----------------------------------------------------------------------------


def test_sha_filter_has_no_false_negatives_and_few_false_positives() -> None:
    digests = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(30_000)]
    built = ShaFilter.of(digests[:10_000], expected=10_000)
    grown = ShaFilter(expected=10_000)
    for digest in digests[:10_000]:
        grown.add(digest)
    assert all(digest in built and digest in grown for digest in digests[:10_000])
    false_positives = sum(digest in built for digest in digests[10_000:])
    assert false_positives < 20_000 * 0.005  # built for 0.1 %
    assert [d in built for d in digests[10_000:12_000]] == [
        d in grown for d in digests[10_000:12_000]
    ]
    assert built.size_bytes < 10_000 * 2


# -- the device-decode loader path (on the CPU, torchvision stands in for nvJPEG) ---------------


def test_device_decode_loader_matches_the_cpu_path(
    tmp_path: Path, catalog: Catalog, clip_encoder: Encoder
) -> None:
    collection = catalog.create_collection("c", [clip_encoder.name])
    paths = []
    for seed in range(5):
        path = tmp_path / f"{seed}.jpg"
        path.write_bytes(jpeg_bytes(make_photo(900, 600, seed=seed)))
        paths.append(path)
    items = [PathItem(str(path)) for path in paths]
    store = DataStore(tmp_path / "data")

    def loader(device: bool) -> ItemLoader:
        return ItemLoader(
            catalog=catalog,
            collection_id=collection.id,
            store=store,
            settings=IndexerSettings(tmp_path / "data"),
            images=ImageInputSettings(),
            device_decode=device,
        )

    on_device = list(encode_stream(items, [clip_encoder], loader(True), batch_size=8, min_batch=8))
    on_cpu = list(encode_stream(items, [clip_encoder], loader(False), batch_size=8, min_batch=8))
    assert [b.items for b in on_device] == [b.items for b in on_cpu] == [items]
    a, b = on_device[0].vectors[clip_encoder.name], on_cpu[0].vectors[clip_encoder.name]
    assert np.sum(a * b, axis=1).min() >= 0.99  # full-size device decode vs draft CPU decode
    for device_payload, cpu_payload in zip(on_device[0].payloads, on_cpu[0].payloads, strict=True):
        assert device_payload == cpu_payload  # same facts, same thumbnail name
        assert isinstance(device_payload, Fresh) and isinstance(cpu_payload, Fresh)
        assert (device_payload.width, device_payload.height) == (900, 600)
        # The CPU loader made the WebP itself; the device path left a preview for the writer.
        assert device_payload.thumbnail_data is None and cpu_payload.thumbnail_data is not None
        assert not store.has(device_payload.thumbnail)
    assert on_cpu[0].previews == [None] * 5
    assert [preview.size for preview in on_device[0].previews] == [(256, 171)] * 5  # type: ignore[union-attr]
    sink = ThumbnailSink(store, longest=256, quality=80, workers=2)
    with closing(sink):
        assert sink.write(on_device[0].payloads, on_device[0].previews) == set()
    for payload in on_device[0].payloads:
        assert isinstance(payload, Fresh)
        with Image.open(store.resolve(payload.thumbnail)) as thumbnail:
            assert (thumbnail.format, thumbnail.size) == ("WEBP", (256, 171))
    assert not list(store.temp_dir.iterdir())


def test_a_bad_line_in_files_from_is_skipped_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A NUL byte or non-UTF-8 bytes in one line ended the whole ingestion with a traceback."""
    from vizdex.indexer.discovery import Inputs, discover

    good = tmp_path / "good.jpg"
    good.write_bytes(b"x")
    listing = tmp_path / "list.txt"
    listing.write_bytes(b"good.jpg\nbad\x00name.jpg\n\xff\xfe.jpg\n\ngood.jpg\n")
    found = list(discover(Inputs(files=(), folders=(), files_from=str(listing)), ["jpg"]))
    assert found == [str(good), str(good)]
    assert "line 2" in caplog.text and "NUL" in caplog.text
    assert "line 3" in caplog.text and "not UTF-8" in caplog.text


@pytest.mark.parametrize("what", ["folder", "fifo"])
def test_something_else_where_a_stored_file_belongs_is_set_aside_and_written(
    tmp_path: Path, what: str
) -> None:
    """Found by the hardening round: a folder or FIFO where an upload's original or a thumbnail
    belongs counted as already stored, so the original was never kept (silently) and the
    thumbnail route answered with a folder."""
    store = DataStore(tmp_path / "data")
    store.prepare()
    sha = hashlib.sha256(b"x").hexdigest()
    original = store.root / store.original_name(sha, "JPEG")
    thumbnail = store.root / store.thumbnail_name(sha)
    for path in (original, thumbnail):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir() if what == "folder" else os.mkfifo(path)
    assert not store.has(store.thumbnail_name(sha))
    data = jpeg_bytes(make_photo(64, 48, seed=1))
    assert store.put_original(sha, "JPEG", data) == store.original_name(sha, "JPEG")
    store.put_files([(store.thumbnail_name(sha), b"webp bytes")])
    assert original.read_bytes() == data and thumbnail.read_bytes() == b"webp bytes"
    assert store.has(store.thumbnail_name(sha))
    aside = sorted(p.name for p in original.parent.iterdir() if ".corrupt" in p.name)
    assert aside == [original.name + ".corrupt"]
