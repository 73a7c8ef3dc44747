"""Micro-batching queue and the batched encoder, without HTTP."""

from __future__ import annotations

import threading
import time
from concurrent.futures import CancelledError, ThreadPoolExecutor

import numpy as np
import pytest

from tests.support.synthetic_photos import make_photo
from vizdex.core.errors import CapabilityError
from vizdex.encoders.base import Encoder
from vizdex.encoders.batched_encoder import BatchedEncoder, batched
from vizdex.encoders.batching import MicroBatcher, QueueFullError, RequestCancelledError
from vizdex.encoders.cancellation import RequestTicket, _current
from vizdex.encoders.settings import BatchSettings


class Recorder:
    def __init__(self, gate: threading.Event | None = None) -> None:
        self.batches: list[list[int]] = []
        self.gate = gate
        self.entered = threading.Event()

    def __call__(self, items: list[int]) -> list[int]:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(10)
        self.batches.append(list(items))
        return [item * 10 for item in items]


class Observer:
    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.seconds: list[float] = []
        self.rejected_count = 0
        self.skipped_count = 0

    def batch_done(self, size: int, seconds: float) -> None:
        self.sizes.append(size)
        self.seconds.append(seconds)

    def rejected(self, count: int) -> None:
        self.rejected_count += count

    def skipped(self, count: int) -> None:
        self.skipped_count += count


class ManualClock:
    """A batcher's clock that moves only when the test says: deadlines without a stopwatch.

    ``sleeps`` lists each timeout the batcher asked to wait, in order; a sleeper wakes when
    notified (a submit, a close) or when ``advance`` moves the time.
    """

    def __init__(self) -> None:
        self._now = 0.0
        self._changed = threading.Condition()
        self._conditions: set[threading.Condition] = set()
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self._now

    def sleep_on(self, cond: threading.Condition, timeout: float) -> None:
        with self._changed:
            self.sleeps.append(timeout)
            self._conditions.add(cond)
            self._changed.notify_all()
        # The caller holds ``cond``: advance() cannot notify before this wait releases it.
        cond.wait()

    def advance(self, seconds: float) -> None:
        self._now += seconds
        with self._changed:
            conditions = list(self._conditions)
        for cond in conditions:
            with cond:
                cond.notify_all()

    def wait_for_sleeps(self, count: int) -> list[float]:
        """The first ``count`` sleeps, once that many were asked for."""
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.sleeps) >= count, timeout=30)
            return self.sleeps[:count]


def make(run: Recorder, **kwargs: object) -> MicroBatcher[int, int]:
    options: dict[str, object] = {"max_batch": 4, "max_wait_s": 0.05, "capacity": 8}
    options.update(kwargs)
    return MicroBatcher("test", run, **options)  # type: ignore[arg-type]


def test_concurrent_items_share_one_call() -> None:
    run = Recorder()
    clock = ManualClock()
    batcher = make(run, max_wait_s=0.5, clock=clock)
    futures = batcher.submit([1, 2, 3, 4])
    assert [f.result(5) for f in futures] == [10, 20, 30, 40]  # the clock never moved
    assert run.batches == [[1, 2, 3, 4]]
    assert clock.sleeps == []  # a full batch goes at once: no waiting for the deadline
    batcher.close()


def test_max_wait_bounds_the_wait_for_company() -> None:
    run = Recorder()
    clock = ManualClock()
    batcher = make(run, max_wait_s=0.25, clock=clock)
    first = batcher.submit([7])[0]
    assert clock.wait_for_sleeps(1) == [0.25]  # waits max_wait_s for company, no more
    clock.advance(0.125)
    assert clock.wait_for_sleeps(2)[1] == 0.125  # woke, the deadline not reached: waits again
    second = batcher.submit([8])[0]  # joins the oldest item's batch, under its deadline
    assert clock.wait_for_sleeps(3)[2] == 0.125
    assert run.batches == [] and not first.done()
    clock.advance(0.125)  # the oldest item's deadline: the batch goes, not full
    assert (first.result(5), second.result(5)) == (70, 80)
    assert run.batches == [[7, 8]]
    batcher.close()


def test_an_item_at_a_worker_idle_for_a_whole_wait_goes_at_once() -> None:
    run = Recorder()
    clock = ManualClock()
    batcher = make(run, max_wait_s=0.25, clock=clock)
    clock.advance(0.25)  # the worker has been idle since t=0: nobody is sending
    assert batcher.submit([1])[0].result(5) == 10  # the clock is frozen: only no wait ends it
    assert clock.sleeps == []
    clock.advance(0.125)  # traffic: the last batch ended under a wait ago, so company may come
    second = batcher.submit([2])[0]
    assert clock.wait_for_sleeps(1) == [0.25]
    assert not second.done()
    clock.advance(0.25)
    assert second.result(5) == 20
    assert run.batches == [[1], [2]]
    batcher.close()


def test_items_from_many_threads_are_batched() -> None:
    run = Recorder()
    clock = ManualClock()  # frozen: the deadline never passes, only a full batch can go
    batcher = make(run, max_batch=8, capacity=64, max_wait_s=0.2, clock=clock)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: batcher.submit([i])[0].result(5), range(8)))
    assert results == [i * 10 for i in range(8)]
    assert len(run.batches) == 1 and sorted(run.batches[0]) == list(range(8))
    batcher.close()


def test_full_queue_refuses_at_once_with_retry_after() -> None:
    gate = threading.Event()
    run = Recorder(gate)
    observer = Observer()
    batcher = make(run, max_batch=1, capacity=2, max_wait_s=0.0, observer=observer)
    first = batcher.submit([1])
    assert run.entered.wait(5)  # the worker holds item 1; the queue is empty again
    queued = batcher.submit([2, 3])
    with pytest.raises(QueueFullError) as refused:
        batcher.submit([4])
    assert refused.value.retry_after >= 1
    assert observer.rejected_count == 1
    gate.set()
    assert [f.result(5) for f in first + queued] == [10, 20, 30]
    batcher.close()


def test_cancelled_items_are_skipped_and_free_their_room() -> None:
    gate = threading.Event()
    run = Recorder(gate)
    observer = Observer()
    batcher = make(run, max_batch=1, capacity=4, max_wait_s=0.0, observer=observer)
    batcher.submit([1])
    assert run.entered.wait(5)
    gone = batcher.submit([2, 3, 4])
    kept = batcher.submit([5])  # a live item among them stays queued
    for future in gone:
        assert future.cancel()
    more = batcher.submit([6, 7, 8])  # room again: cancelled items do not count
    gate.set()
    assert [f.result(5) for f in kept + more] == [50, 60, 70, 80]
    assert not {2, 3, 4} & {item for batch in run.batches for item in batch}
    assert observer.skipped_count == 3  # each dropped item counted once
    batcher.close()


def test_retry_after_counts_the_batches_ahead_not_the_items() -> None:
    """The same 400 queued items are 400 batches ahead with max_batch=1, 100 with 4."""
    retry: dict[int, int] = {}
    for max_batch in (1, 4):
        gate = threading.Event()
        run = Recorder(gate)
        batcher = make(run, max_batch=max_batch, capacity=400, max_wait_s=0.0)
        batcher.submit([0])
        assert run.entered.wait(5)  # the worker holds item 0: nothing measured yet
        batcher.submit(list(range(1, 401)))
        with pytest.raises(QueueFullError) as refused:
            batcher.submit([401])
        retry[max_batch] = refused.value.retry_after
        gate.set()
        batcher.close()
    assert retry[4] < retry[1] <= 4 * retry[4]


@pytest.mark.parametrize("returned", [1, 3])
def test_a_call_with_the_wrong_number_of_results_fails_its_batch(returned: int) -> None:
    def wrong(items: list[int]) -> list[int]:
        return list(range(returned))

    batcher: MicroBatcher[int, int] = MicroBatcher(
        "wrong", wrong, max_batch=2, max_wait_s=0.0, capacity=2
    )
    for future in batcher.submit([1, 2]):
        with pytest.raises(RuntimeError, match=f"{returned} results for 2 items"):
            future.result(5)
    batcher.close()


def test_each_batch_reports_its_size_and_the_time_it_took() -> None:
    run = Recorder()
    observer = Observer()
    batcher = make(run, max_batch=2, capacity=4, max_wait_s=0.0, observer=observer)
    started = time.perf_counter()
    assert [f.result(5) for f in batcher.submit([1, 2])] == [10, 20]
    batcher.close()
    watched = time.perf_counter() - started
    assert observer.sizes == [2]
    # Not a speed check: a batch that ran inside this interval cannot have taken longer.
    assert 0.0 <= observer.seconds[0] <= watched


def test_a_failing_call_fails_every_item_of_its_batch() -> None:
    def boom(items: list[int]) -> list[int]:
        raise ValueError("model exploded")

    batcher: MicroBatcher[int, int] = MicroBatcher(
        "boom", boom, max_batch=4, max_wait_s=0.0, capacity=4
    )
    futures = batcher.submit([1, 2])
    for future in futures:
        with pytest.raises(ValueError, match="exploded"):
            future.result(5)
    assert batcher.submit([3])[0].exception(5) is not None  # the worker survived
    batcher.close()


def test_bulk_submit_waits_for_room() -> None:
    gate = threading.Event()
    run = Recorder(gate)
    clock = ManualClock()
    batcher = make(run, max_batch=1, capacity=1, max_wait_s=0.0, clock=clock)
    batcher.submit([1])
    assert run.entered.wait(5)
    batcher.submit([2])
    with ThreadPoolExecutor(1) as pool:
        third = pool.submit(lambda: batcher.submit([3], wait_s=5)[0].result(5))
        assert clock.wait_for_sleeps(1) == [5]  # full: it waits up to wait_s for room
        gate.set()  # the worker takes item 2: room, and the waiting submit gets in
        assert third.result(10) == 30
    batcher.close()


def test_bulk_submit_gives_up_after_wait_s() -> None:
    gate = threading.Event()
    run = Recorder(gate)
    observer = Observer()
    clock = ManualClock()
    batcher = make(run, max_batch=1, capacity=1, max_wait_s=0.0, clock=clock, observer=observer)
    batcher.submit([1])
    assert run.entered.wait(5)
    batcher.submit([2])
    with ThreadPoolExecutor(1) as pool:
        third = pool.submit(batcher.submit, [3], wait_s=5)
        assert clock.wait_for_sleeps(1) == [5]
        clock.advance(4)
        assert clock.wait_for_sleeps(2)[1] == 1  # still no room, one second left
        clock.advance(1)
        with pytest.raises(QueueFullError):
            third.result(10)
    assert observer.rejected_count == 1
    gate.set()
    batcher.close()


def test_close_drains_then_refuses() -> None:
    run = Recorder()
    clock = ManualClock()  # frozen: only close() can end the wait for company
    batcher = make(run, max_wait_s=1.0, clock=clock)
    futures = batcher.submit([1, 2])
    assert clock.wait_for_sleeps(1) == [1.0]
    batcher.close()
    assert [f.result(1) for f in futures] == [10, 20]
    with pytest.raises(Exception, match="shutting down"):
        batcher.submit([3])


def test_ticket_cancels_tracked_futures_and_refuses_new_ones() -> None:
    gate = threading.Event()
    run = Recorder(gate)
    batcher = make(run, max_batch=1, capacity=4, max_wait_s=0.0)
    batcher.submit([1])
    assert run.entered.wait(5)
    ticket = RequestTicket()
    futures = batcher.submit([2])
    ticket.track(futures)
    ticket.cancel()
    with pytest.raises(CancelledError):
        futures[0].result(1)
    with pytest.raises(RequestCancelledError):
        ticket.track(batcher.submit([3]))
    gate.set()
    batcher.close()
    assert run.batches == [[1]]


# -- the batched encoder -----------------------------------------------------------------------


@pytest.fixture
def batch_settings() -> BatchSettings:
    return BatchSettings(max_batch=4, max_wait_ms=2, queue_size=16)


def test_batched_vectors_match_the_model(
    clip_encoder: Encoder, batch_settings: BatchSettings
) -> None:
    wrapped = BatchedEncoder(clip_encoder, batch_settings)
    images = [make_photo(80, 60, seed=i) for i in range(6)]  # more than one queue batch
    try:
        direct = clip_encoder.encode_images(images)
        queued = wrapped.encode_images(images)
        np.testing.assert_allclose(queued, direct, atol=1e-5)
        raw = wrapped.encode_images(images[:2], normalize=False)
        np.testing.assert_allclose(
            raw, clip_encoder.encode_images(images[:2], normalize=False), atol=1e-4
        )
        texts = ["a red bicycle", "snow", "cat", "a dog", "rain", "a boat"]  # two queue batches
        np.testing.assert_allclose(
            wrapped.encode_texts(texts), clip_encoder.encode_texts(texts), atol=1e-5
        )
        np.testing.assert_allclose(
            wrapped.encode_texts(texts, normalize=False),
            clip_encoder.encode_texts(texts, normalize=False),
            atol=1e-4,
        )
        nothing = wrapped.encode_images([])
        assert nothing.shape == (0, clip_encoder.dim) and nothing.dtype == np.float32
        assert wrapped.logit_scale == pytest.approx(getattr(clip_encoder, "logit_scale", 0.0))
    finally:
        wrapped.close()


def test_vision_only_model_keeps_its_capability_error(
    dino_encoder: Encoder, batch_settings: BatchSettings
) -> None:
    wrapped = BatchedEncoder(dino_encoder, batch_settings)
    try:
        assert wrapped.text_queue is None
        with pytest.raises(CapabilityError):
            wrapped.encode_texts(["hello"])
        assert getattr(wrapped, "logit_scale", "none") == "none"
    finally:
        wrapped.close()


def test_cancelled_request_raises_request_cancelled(
    clip_encoder: Encoder, batch_settings: BatchSettings
) -> None:
    wrapped = BatchedEncoder(clip_encoder, batch_settings)
    ticket = RequestTicket()
    ticket.cancel()
    token = _current.set(ticket)
    try:
        with pytest.raises(RequestCancelledError):
            wrapped.encode_texts(["gone"])
    finally:
        _current.reset(token)
        wrapped.close()


def test_batching_off_leaves_models_alone(clip_encoder: Encoder) -> None:
    models = {"clip": clip_encoder}
    assert batched(models, BatchSettings(max_batch=0), None)["clip"] is clip_encoder


def test_batch_settings_validate() -> None:
    with pytest.raises(Exception, match="QUEUE_SIZE"):
        BatchSettings(max_batch=64, queue_size=8)
    assert BatchSettings.from_env({"VIZDEX_MAX_BATCH": "0"}).enabled is False
    loaded = BatchSettings.from_env(
        {"VIZDEX_MAX_BATCH": "8", "VIZDEX_MAX_WAIT_MS": "3", "VIZDEX_QUEUE_SIZE": "100"}
    )
    assert (loaded.max_batch, loaded.max_wait_ms, loaded.queue_size) == (8, 3.0, 100)
