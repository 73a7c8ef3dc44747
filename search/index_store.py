"""Keeps one vector index per (collection, model) consistent with the catalog.

The catalog is the source of truth and every index change comes from it (``index_replay``); each
index lives in a slot with its snapshot file (``index_slot``). This module owns the slots: it
loads them on first use, syncs them after writes, retrains and snapshots them in the background,
and answers searches.

Locking: each index has a mutex for the one writer (load, catch-up, swap) and the index itself
lets searches run beside each other but never beside a mutation. A retrain builds the new index
without any lock, then catches it up and swaps it in under the mutex: searches never wait for it.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from vizdex.core.errors import storage_full
from vizdex.search.catalog import Catalog
from vizdex.search.errors import CollectionNotFoundError, InvalidQueryError
from vizdex.search.index import IndexBackend, IndexPolicy, IndexSpec, VectorIndex
from vizdex.search.index_replay import Replay
from vizdex.search.index_slot import (
    FILE_SUFFIX,
    Slot,
    index_file_name,
    side_files,
    write_index_file,
)
from vizdex.search.records import CollectionRecord
from vizdex.search.settings import IndexSettings
from vizdex.search.vector_file import VectorFilePlace
from vizdex.search.vector_source import VectorSource

log = logging.getLogger(__name__)

__all__ = [
    "FILE_SUFFIX",
    "IndexInfo",
    "IndexStore",
    "RangeOutput",
    "SearchOutput",
    "index_file_name",
]


@dataclass(frozen=True)
class IndexInfo:
    collection_id: int
    model: str
    kind: str
    device: str
    count: int
    dim: int
    last_seq: int
    nlist: int
    nprobe: int
    retraining: bool
    path: Path


@dataclass(frozen=True)
class SearchOutput:
    scores: np.ndarray  # float32 [queries, k], -inf where there is no hit
    ids: np.ndarray  # int64 [queries, k], -1 where there is no hit
    count: int  # vectors in the index when it answered
    approximate: bool


@dataclass(frozen=True)
class RangeOutput:
    """A range search's hits in FAISS's layout: query ``i``'s are ``[lims[i], lims[i + 1])``."""

    lims: np.ndarray  # int64 [queries + 1]
    scores: np.ndarray  # float32 [hits]
    ids: np.ndarray  # int64 [hits]
    approximate: bool
    nprobe: int  # IVF lists probed per query; 0 for an exact index


def _discard_exact(index: VectorIndex | None) -> None:
    """Closes and deletes the vector file of an index whose model was removed."""
    if index is None:
        return
    exact = index.exact_file
    index.attach_exact(None)
    if exact is not None:
        exact.unlink(missing_ok=True)


class IndexStore:
    """Loads, replays, updates, retrains and snapshots the vector indexes of a catalog."""

    def __init__(
        self,
        catalog: Catalog,
        settings: IndexSettings,
        *,
        backend: IndexBackend | None = None,
    ) -> None:
        self._catalog = catalog
        self._settings = settings
        self._backend = backend or IndexBackend.detect(settings.device)
        self._replay = Replay(
            catalog,
            self._backend,
            lambda source, policy, seq, dim: self.build_index(
                source, policy, last_seq=seq, dim=dim
            ),
            batch_size=settings.build_batch,
        )
        self._slots: dict[tuple[int, str], Slot] = {}
        self._slots_lock = threading.Lock()
        # One background worker: retrains and snapshots are heavy; they queue rather than pile up.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vizdex-index")
        self._pending: set[Future[None]] = set()
        self._pending_lock = threading.Lock()
        self._closed = False
        self._stop_following = threading.Event()
        self._follower: threading.Thread | None = None

    @property
    def backend(self) -> IndexBackend:
        return self._backend

    def policy_for(self, collection: CollectionRecord) -> IndexPolicy:
        return IndexPolicy(
            exact_max=(
                collection.exact_max
                if collection.exact_max is not None
                else self._settings.exact_max
            ),
            factory=collection.index_factory,
            recall_target=self._settings.recall_target,
            tuning_queries=self._settings.tuning_queries,
            seed=self._settings.seed,
            compress_min=self._settings.compress_min or None,
            rerank=self._settings.rerank,
        )

    def path_for(self, collection_id: int, model: str) -> Path:
        return self._settings.directory / f"collection-{collection_id}" / index_file_name(model)

    def build_index(
        self, source: VectorSource, policy: IndexPolicy, *, last_seq: int, dim: int
    ) -> VectorIndex:
        """Builds (and for IVF trains and tunes) an index from vectors read a batch at a time;
        the one place a rebuild goes through."""
        return VectorIndex.build_from(source, policy, self._backend, last_seq=last_seq, dim=dim)

    # -- slots ---------------------------------------------------------------------------------

    def _slot(self, collection: CollectionRecord, model: str) -> Slot:
        if model not in collection.models:
            raise InvalidQueryError(
                f"collection {collection.name!r} is not embedded with model {model!r}; "
                f"its models are {list(collection.models)}"
            )
        key = (collection.id, model)
        with self._slots_lock:
            slot = self._slots.get(key)
            if slot is None:
                path = self.path_for(collection.id, model)
                place = VectorFilePlace(path.with_suffix(""), collection.id, model)
                slot = Slot(
                    collection_id=collection.id,
                    model=model,
                    policy=replace(self.policy_for(collection), vector_place=place),
                    path=path,
                )
                self._slots[key] = slot
        if not slot.loaded:
            with slot.mutex:
                if not slot.loaded:
                    if self._replay.load(slot):
                        self._schedule_snapshot(slot)
                    slot.loaded = True
        return slot

    def open_collection(self, collection: CollectionRecord) -> None:
        """Loads (or rebuilds) every index of a collection now rather than on first use."""
        for model in collection.models:
            self._slot(collection, model)

    # -- updates -------------------------------------------------------------------------------

    def sync(
        self, collection: CollectionRecord, *, wait: bool = True, timeout_s: float | None = None
    ) -> None:
        """Brings every index of the collection up to the catalog's current position.

        With ``wait=False`` an index whose writer is busy is skipped: that writer is applying the
        same changes (this is what queries use, so they never queue behind a retrain's swap).
        ``timeout_s`` bounds the wait for a busy writer; the index is then skipped as well.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for model in collection.models:
            slot = self._slot(collection, model)
            if wait and deadline is not None:
                acquired = slot.mutex.acquire(timeout=max(0.0, deadline - time.monotonic()))
            else:
                acquired = slot.mutex.acquire(blocking=wait)
            if not acquired:
                continue
            try:
                self._replay.apply_changes(slot)
            finally:
                slot.mutex.release()
            self._after_change(slot)

    def _after_change(self, slot: Slot) -> None:
        index = slot.index
        if index is None or self._closed:
            return
        with self._pending_lock:  # check-and-set: one retrain at a time per index
            retrain = not slot.retraining and slot.policy.needs_retrain(index.spec, index.ntotal)
            if retrain:
                slot.retraining = True
        if retrain:
            self._submit(lambda: self._retrain(slot))
        elif slot.seq - slot.saved[1] >= self._settings.snapshot_every:
            self._schedule_snapshot(slot)

    def _retrain(self, slot: Slot) -> None:
        try:
            upto = self._catalog.collection_seq(slot.collection_id)
            source = self._replay.source(slot, upto)
            dim = source.dim()
            if dim is None or slot.dropped:
                return
            built = self.build_index(source, slot.policy, last_seq=upto, dim=dim)
            with slot.mutex:  # writers wait for the short catch-up; searches do not wait at all
                fresh = self._replay.catch_up(slot, built)
                slot.index = fresh
                slot.generation += 1
                if slot.dropped:
                    # The model went while this built: drop_model swept the folder before this
                    # index's vector file existed (it is set dropped first, then sweeps).
                    _discard_exact(fresh)
                    return
            log.info(
                "collection %d / %s now uses a %s index (%d vectors, nprobe %d)",
                slot.collection_id,
                slot.model,
                fresh.spec.kind if fresh else "-",
                fresh.ntotal if fresh else 0,
                fresh.spec.nprobe if fresh else 0,
            )
            write_index_file(slot)
        except CollectionNotFoundError:
            log.info("collection %d was deleted during a retrain", slot.collection_id)
        finally:
            slot.retraining = False

    # -- snapshots and background work ---------------------------------------------------------

    def _schedule_snapshot(self, slot: Slot) -> None:
        with self._pending_lock:
            if slot.snapshot_queued or self._closed:
                return
            slot.snapshot_queued = True

        def task() -> None:
            slot.snapshot_queued = False
            write_index_file(slot)

        self._submit(task)

    def _repair_exact(self, slot: Slot) -> None:
        """Rebuilds, in the background, exact vectors a search found damaged (a block failed
        its checksum; until then those rows keep their approximate scores), and saves the
        snapshot that names the new file."""
        with self._pending_lock:
            if slot.repair_queued or self._closed:
                return
            slot.repair_queued = True

        def task() -> None:
            try:
                with slot.mutex:
                    if self._replay.ensure_exact(slot):
                        slot.generation += 1
                        if slot.dropped:  # as in _retrain: made after drop_model's sweep
                            _discard_exact(slot.index)
                            return
            finally:
                slot.repair_queued = False
            write_index_file(slot)

        self._submit(task)

    def snapshot(self, collection: CollectionRecord) -> None:
        """Writes every changed index of the collection now (blocking)."""
        for model in collection.models:
            write_index_file(self._slot(collection, model))

    def snapshot_floor(self, collection: CollectionRecord) -> int:
        """Writes every index of the collection now; returns the sequence number all their files
        include (what tombstones may be pruned up to without this process ever replaying one)."""
        floor: int | None = None
        for model in collection.models:
            slot = self._slot(collection, model)
            write_index_file(slot)
            # No index (never a vector): there is no file to replay tombstones onto.
            seq = slot.saved[1] if slot.index is not None else slot.seq
            floor = seq if floor is None else min(floor, seq)
        return max(floor or 0, 0)

    def _submit(self, task: Callable[[], None]) -> None:
        def run() -> None:
            try:
                task()
            except Exception:
                log.exception("background index task failed")

        with self._pending_lock:
            if self._closed:
                return
            future = self._worker.submit(run)
            self._pending.add(future)
        future.add_done_callback(self._forget)

    def _forget(self, future: Future[None]) -> None:
        with self._pending_lock:
            self._pending.discard(future)

    def wait_idle(self, timeout: float | None = None) -> None:
        """Waits until no retrain or snapshot is queued or running (tests, shutdown)."""
        while True:
            with self._pending_lock:
                pending = list(self._pending)
            if not pending:
                return
            for future in pending:
                future.result(timeout=timeout)

    # -- queries -------------------------------------------------------------------------------

    def search(
        self,
        collection: CollectionRecord,
        model: str,
        queries: np.ndarray,
        k: int,
        *,
        allowed_ids: np.ndarray | None = None,
        exhaustive: bool = False,
    ) -> SearchOutput:
        slot = self._slot(collection, model)
        if self._settings.sync_on_query and (
            self._catalog.collection_seq(collection.id) > slot.seq
        ):
            try:
                self.sync(collection, wait=False)
            except OSError as error:
                # A full index disk refuses the new rows (their write answered 503 already);
                # a search needs no disk: it answers from the index as it is.
                if storage_full(error) is None:
                    raise
                log.warning(
                    "index of collection %d is behind the catalog: %s", collection.id, error
                )
        index = slot.index  # one read: a concurrent swap cannot change it under this search
        if index is None:
            shape = (len(queries), k)
            return SearchOutput(
                np.full(shape, -np.inf, np.float32), np.full(shape, -1, np.int64), 0, False
            )
        scores, ids = index.search(queries, k, allowed_ids=allowed_ids, exhaustive=exhaustive)
        if index.exact_damaged:
            self._repair_exact(slot)
        return SearchOutput(scores, ids, index.ntotal, index.approximate)

    def range_search(
        self,
        collection: CollectionRecord,
        model: str,
        queries: np.ndarray,
        threshold: float,
        *,
        nprobe: int | None = None,
    ) -> RangeOutput:
        """Every vector scoring at least ``threshold`` with each query (as the index is now: the
        caller syncs first). ``nprobe``: IVF lists probed, default the index's tuned value."""
        index = self._slot(collection, model).index
        if index is None:
            empty = np.zeros(0, dtype=np.int64)
            lims = np.zeros(len(queries) + 1, dtype=np.int64)
            return RangeOutput(lims, np.zeros(0, np.float32), empty, False, 0)
        probe = (nprobe or index.spec.nprobe or 1) if index.approximate else 0
        if index.approximate:
            probe = min(probe, index.spec.nlist) if index.spec.nlist else probe
        lims, scores, ids = index.range_search(queries, threshold, nprobe=probe or None)
        if index.exact_damaged:
            self._repair_exact(self._slot(collection, model))
        return RangeOutput(lims, scores, ids, index.approximate, probe)

    def ids(self, collection: CollectionRecord, model: str) -> np.ndarray:
        """Every image id in the index, as it is now (O(N): for checks and tests)."""
        index = self._slot(collection, model).index
        return index.ids() if index is not None else np.zeros(0, dtype=np.int64)

    def dim(self, collection: CollectionRecord, model: str) -> int | None:
        index = self._slot(collection, model).index
        return index.dim if index is not None else None

    def info(self, collection: CollectionRecord, model: str) -> IndexInfo:
        slot = self._slot(collection, model)
        index = slot.index
        spec = index.spec if index is not None else IndexSpec(kind="flat", dim=0)
        return IndexInfo(
            collection_id=collection.id,
            model=model,
            kind=spec.kind,
            device=index.device if index is not None else self._backend.name,
            count=index.ntotal if index is not None else 0,
            dim=spec.dim,
            last_seq=slot.seq,
            nlist=spec.nlist,
            nprobe=spec.nprobe,
            retraining=slot.retraining,
            path=slot.path,
        )

    # -- following the catalog (replicas) -----------------------------------------------------

    def follow(self) -> None:
        """Catches every loaded index up with the catalog's change feed; forgets collections
        deleted elsewhere (by another replica)."""
        with self._slots_lock:
            collection_ids = {key[0] for key, slot in self._slots.items() if slot.loaded}
        for collection_id in sorted(collection_ids):
            try:
                collection = self._catalog.get_collection_by_id(collection_id)
            except CollectionNotFoundError:
                self.drop_collection(collection_id)
                continue
            self.sync(collection, wait=False)

    def reach(self, collection: CollectionRecord, min_seq: int, timeout_s: float) -> bool:
        """Catches the collection's indexes up until each holds sequence number ``min_seq``
        (read-your-writes across replicas), trying for at most ``timeout_s``. Returns whether
        they did: a number the catalog has not handed out yet is never reached."""
        deadline = time.monotonic() + timeout_s
        while True:
            if all(self._slot(collection, model).seq >= min_seq for model in collection.models):
                return True
            # Waits for a busy writer (it may be applying just that seq), but not past the
            # deadline: a long retrain swap or replay must not hold the request up unbounded.
            self.sync(collection, timeout_s=deadline - time.monotonic())
            if all(self._slot(collection, model).seq >= min_seq for model in collection.models):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(0.05, remaining))

    def applied_seqs(self) -> dict[int, int]:
        """Per loaded collection, the sequence number all its loaded indexes have applied."""
        applied: dict[int, int] = {}
        with self._slots_lock:
            slots = [slot for slot in self._slots.values() if slot.loaded]
        for slot in slots:
            seq = slot.seq
            applied[slot.collection_id] = min(applied.get(slot.collection_id, seq), seq)
        return applied

    def start_following(self, interval_s: float = 1.0) -> None:
        """``follow`` every ``interval_s`` until ``close``: what other replicas and workers
        write reaches this replica's indexes (and its snapshots) without waiting for a query."""
        if self._follower is not None:
            return

        def loop() -> None:
            while not self._stop_following.wait(interval_s):
                try:
                    self.follow()
                except Exception:  # e.g. the database briefly unreachable: next round
                    log.exception("following the catalog failed")

        self._follower = threading.Thread(target=loop, name="vizdex-index-follower", daemon=True)
        self._follower.start()

    # -- lifecycle -----------------------------------------------------------------------------

    def drop_collection(self, collection_id: int) -> None:
        """Forgets a deleted collection's indexes and removes their files."""
        with self._slots_lock:
            for key in [key for key in self._slots if key[0] == collection_id]:
                slot = self._slots.pop(key)
                with slot.save_lock:
                    slot.dropped = True
                    slot.index = None
        shutil.rmtree(self._settings.directory / f"collection-{collection_id}", ignore_errors=True)

    def drop_model(self, collection_id: int, model: str) -> None:
        """Forgets one model's index of a collection (the model was removed) and its files:
        the snapshot and, for a re-ranked index, its FAISS and vector files beside it."""
        with self._slots_lock:
            slot = self._slots.pop((collection_id, model), None)
        if slot is not None:
            with slot.save_lock:
                slot.dropped = True
                slot.index = None
        path = self.path_for(collection_id, model)
        path.unlink(missing_ok=True)
        for side in side_files(path.with_suffix("")):
            side.unlink(missing_ok=True)

    def close(self, *, snapshot: bool = True) -> None:
        """Stops background work and (by default) saves every index that changed."""
        self._stop_following.set()
        follower, self._follower = self._follower, None
        if follower is not None:
            follower.join()
        with self._pending_lock:
            self._closed = True
        self._worker.shutdown(wait=True, cancel_futures=True)
        if not snapshot:
            return
        with self._slots_lock:
            slots = list(self._slots.values())
        for slot in slots:
            if slot.loaded:
                try:
                    write_index_file(slot)
                except OSError:
                    log.exception("could not save the index of collection %d", slot.collection_id)
