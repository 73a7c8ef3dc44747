"""``VIZDEX_BACKFILL_SHARE`` holds a real back-fill (SQLite, tiny CLIP and DINOv3) to its share of
the device: checked on the throttle's own accounting with an injected clock, where every batch
is busy exactly one second, so nothing is timed. Query latency beside a back-fill at several
shares is measured in ``benchmarks/backfill_share.py``.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.support.ingest_helpers import Harness, photo_folder
from tests.support.ingest_helpers import harness as harness  # the fixture
from vizdex.imaging import ImageInputSettings
from vizdex.indexer import IndexerSettings, IngestRequest
from vizdex.indexer.backfill import Backfill, BackfillOptions
from vizdex.indexer.jobs import JobTracker
from vizdex.indexer.throttle import Throttle

PHOTOS = 10
BATCH = 4  # three batches: 4, 4, 2


class FakeTime:
    """Each reading of the clock is one second after the last, so a batch is one second busy;
    a rest moves the clock on by its length and is recorded."""

    def __init__(self) -> None:
        self.now = 0.0
        self.rests: list[float] = []

    def clock(self) -> float:
        self.now += 1.0
        return self.now

    def rest(self, cancel: threading.Event, seconds: float) -> None:
        self.rests.append(seconds)
        self.now += seconds


def _backfill(harness: Harness, tmp_path: Path, share: str) -> tuple[Backfill, FakeTime, int]:
    """A back-fill of DINOv3 over PHOTOS images at VIZDEX_BACKFILL_SHARE=share, run to its end."""
    clip, dino = harness.collection.models
    photo_folder(tmp_path / "photos", PHOTOS)
    record = harness.catalog.create_collection(f"c{share}", [clip])
    harness.indexer.ingest(record.name, IngestRequest(paths=(str(tmp_path / "photos"),)))
    harness.catalog.add_model(record.id, dino)
    env = {"VIZDEX_BACKFILL_SHARE": share, "VIZDEX_BATCH_SIZE": str(BATCH)}
    settings = IndexerSettings.from_env({**env, "VIZDEX_DATA_DIR": str(harness.settings.data_dir)})
    fake = FakeTime()
    runner = Backfill(
        catalog=harness.catalog,
        indexes=harness.indexes,
        store=harness.indexer.store,
        encoder=harness.encoders[dino],
        images=ImageInputSettings(),
        options=BackfillOptions.of(settings),
        clock=fake.clock,
        rest=fake.rest,
    )
    job = harness.catalog.create_job(record.id, kind="backfill", source=dino)
    outcome = runner.run(record.id, dino, JobTracker(harness.catalog, job.id), threading.Event())
    assert (outcome.done, outcome.failed, outcome.ready) == (PHOTOS, 0, True)
    return runner, fake, record.id


@pytest.mark.parametrize(("share", "rest_per_batch"), [("0.25", 3.0), ("0.5", 1.0)])
def test_the_backfill_rests_after_each_batch_so_it_holds_the_device_its_share(
    harness: Harness, tmp_path: Path, share: str, rest_per_batch: float
) -> None:
    runner, fake, _ = _backfill(harness, tmp_path, share)
    throttle = runner.throttle
    assert throttle.share == float(share)
    assert throttle.batches == 3 and throttle.busy_s == 3.0
    assert fake.rests == [rest_per_batch] * 3  # busy 1 s, then (1 - share) / share s of rest
    assert throttle.rested_s == sum(fake.rests)
    assert throttle.busy_s / (throttle.busy_s + throttle.rested_s) == pytest.approx(float(share))


def test_a_full_share_never_rests(harness: Harness, tmp_path: Path) -> None:
    runner, fake, _ = _backfill(harness, tmp_path, "1")
    assert runner.throttle.batches == 3 and fake.rests == [] and runner.throttle.rested_s == 0


def test_a_cancelled_batch_does_not_rest_and_a_share_must_be_positive() -> None:
    fake = FakeTime()
    throttle = Throttle(0.5, clock=fake.clock, rest=fake.rest)
    cancel = threading.Event()
    with throttle.batch(cancel):
        cancel.set()  # the job is cancelled while its batch runs: it stops, without resting
    assert fake.rests == [] and throttle.busy_s == 1.0
    for share in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="share"):
            Throttle(share)
