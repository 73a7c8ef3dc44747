"""Keeps one vector index per (collection, model) consistent with the catalog.

The catalog is the source of truth and every index change comes from it: an index knows the last
sequence number it contains, and catching up means applying the catalog's changes after that
number (tombstones out, new vectors in). The same path serves start-up replay after a snapshot,
live updates after a write, and writes made by other processes.

Locking: each index has a mutex for the one writer (load, catch-up, swap) and the index itself
lets searches run beside each other but never beside a mutation. A retrain builds the new index
without any lock, then catches it up and swaps it in under the mutex: searches never wait for it.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from vizdex.search.catalog import Catalog
from vizdex.search.errors import CollectionNotFoundError, IndexCorruptError, InvalidQueryError
from vizdex.search.index import IndexBackend, IndexPolicy, IndexSpec, VectorIndex
from vizdex.search.index_file import (
    move_aside,
    read_snapshot,
    remove_stale_temporaries,
    write_snapshot,
)
from vizdex.search.records import CollectionRecord
from vizdex.search.settings import IndexSettings

log = logging.getLogger(__name__)

FILE_SUFFIX = ".vdx"


def index_file_name(model: str) -> str:
    """A readable, collision-free file name for a model name such as ``org/model``."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model).strip("._")[:80] or "model"
    return f"{slug}-{hashlib.sha1(model.encode()).hexdigest()[:8]}{FILE_SUFFIX}"


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


@dataclass
class _Slot:
    collection_id: int
    model: str
    policy: IndexPolicy
    path: Path
    mutex: threading.Lock = field(default_factory=threading.Lock)
    save_lock: threading.Lock = field(default_factory=threading.Lock)
    loaded: bool = False
    index: VectorIndex | None = None
    empty_seq: int = 0  # the catalog position while there is no vector yet (no dimension known)
    generation: int = 0  # bumped whenever ``index`` is replaced
    saved: tuple[int, int] = (-1, -1)  # (generation, last_seq) of the file on disk
    retraining: bool = False
    snapshot_queued: bool = False
    dropped: bool = False

    @property
    def seq(self) -> int:
        return self.index.last_seq if self.index is not None else self.empty_seq


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
        self._slots: dict[tuple[int, str], _Slot] = {}
        self._slots_lock = threading.Lock()
        # One background worker: retrains and snapshots are heavy; they queue rather than pile up.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vizdex-index")
        self._pending: set[Future[None]] = set()
        self._pending_lock = threading.Lock()
        self._closed = False

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
        )

    def path_for(self, collection_id: int, model: str) -> Path:
        return self._settings.directory / f"collection-{collection_id}" / index_file_name(model)

    def build_index(
        self, ids: np.ndarray, vectors: np.ndarray, policy: IndexPolicy, *, last_seq: int
    ) -> VectorIndex:
        """Builds (and for IVF trains and tunes) an index; the one place a rebuild goes through."""
        return VectorIndex.build(ids, vectors, policy, self._backend, last_seq=last_seq)

    # -- slots ---------------------------------------------------------------------------------

    def _slot(self, collection: CollectionRecord, model: str) -> _Slot:
        if model not in collection.models:
            raise InvalidQueryError(
                f"collection {collection.name!r} is not embedded with model {model!r}; "
                f"its models are {list(collection.models)}"
            )
        key = (collection.id, model)
        with self._slots_lock:
            slot = self._slots.get(key)
            if slot is None:
                slot = _Slot(
                    collection_id=collection.id,
                    model=model,
                    policy=self.policy_for(collection),
                    path=self.path_for(collection.id, model),
                )
                self._slots[key] = slot
        if not slot.loaded:
            with slot.mutex:
                if not slot.loaded:
                    self._load(slot)
                    slot.loaded = True
        return slot

    def open_collection(self, collection: CollectionRecord) -> None:
        """Loads (or rebuilds) every index of a collection now rather than on first use."""
        for model in collection.models:
            self._slot(collection, model)

    # -- loading -------------------------------------------------------------------------------

    def _load(self, slot: _Slot) -> None:
        remove_stale_temporaries(slot.path)
        loaded = self._read_file(slot)
        slot.index = (
            self._build_from_catalog(slot) if loaded is None else self._catch_up(slot, loaded)
        )
        slot.generation += 1
        if not self._consistent(slot):
            move_aside(slot.path, "index does not match the catalog after replay")
            slot.index = self._build_from_catalog(slot)
            slot.generation += 1
        if slot.index is not None and slot.saved != (slot.generation, slot.seq):
            self._schedule_snapshot(slot)

    def _read_file(self, slot: _Slot) -> VectorIndex | None:
        if not slot.path.exists():
            log.info("no index file for collection %d / %s: building it", *self._key(slot))
            return None
        try:
            header, payload = read_snapshot(slot.path)
            if header.get("collection_id") != slot.collection_id or header.get("model") != (
                slot.model
            ):
                raise IndexCorruptError("the file belongs to another collection or model")
            last_seq = int(header["last_seq"])
            if last_seq > self._catalog.collection_seq(slot.collection_id):
                raise IndexCorruptError(
                    "the file is ahead of the catalog (was the database restored or replaced?)"
                )
            spec = IndexSpec.from_dict(header["spec"])
            index = VectorIndex.deserialize(payload, spec, self._backend, last_seq=last_seq)
            if index.ntotal != int(header["count"]):
                raise IndexCorruptError("vector count does not match the header")
        except IndexCorruptError as error:
            move_aside(slot.path, error.message)
            return None
        except (RuntimeError, KeyError, TypeError, ValueError) as error:
            move_aside(slot.path, f"unreadable: {error}")
            return None
        slot.saved = (slot.generation + 1, last_seq)  # the generation _load is about to assign
        log.info(
            "loaded index for collection %d / %s at seq %d (%d vectors)",
            slot.collection_id,
            slot.model,
            last_seq,
            index.ntotal,
        )
        return index

    @staticmethod
    def _key(slot: _Slot) -> tuple[int, str]:
        return slot.collection_id, slot.model

    def _consistent(self, slot: _Slot) -> bool:
        """Same vector count and id sum as the catalog, checked at one consistent position."""
        for _ in range(3):
            seq, count, id_sum = self._catalog.embedding_summary(slot.collection_id, slot.model)
            if seq != slot.seq:
                self._apply_changes(slot)
                continue
            index = slot.index
            if index is None:
                return count == 0
            ids = index.ids()
            return len(ids) == count and int(ids.sum()) == id_sum
        return True  # the catalog keeps moving: nothing suggests a mismatch

    def _build_from_catalog(self, slot: _Slot) -> VectorIndex | None:
        upto = self._catalog.collection_seq(slot.collection_id)
        batches = list(self._catalog.iter_embeddings(slot.collection_id, slot.model, upto_seq=upto))
        if not batches:
            slot.empty_seq = upto
            return self._catch_up(slot, None)
        ids = np.concatenate([batch[0] for batch in batches])
        vectors = np.concatenate([batch[1] for batch in batches])
        del batches
        index = self.build_index(ids, vectors, slot.policy, last_seq=upto)
        log.info(
            "built %s index for collection %d / %s from the catalog (%d vectors)",
            index.spec.kind,
            slot.collection_id,
            slot.model,
            index.ntotal,
        )
        return self._catch_up(slot, index)

    def _catch_up(self, slot: _Slot, index: VectorIndex | None) -> VectorIndex | None:
        """Applies the catalog's changes after the index's position (no lock: caller's job)."""
        target = self._catalog.collection_seq(slot.collection_id)
        current = index.last_seq if index is not None else slot.empty_seq
        if target <= current:
            return index
        changes = self._catalog.changes(
            slot.collection_id, slot.model, after_seq=current, upto_seq=target
        )
        if index is None:
            if len(changes.added_ids) == 0:
                slot.empty_seq = target
                return None
            index = VectorIndex.empty(
                changes.added_vectors.shape[1], self._backend, last_seq=current
            )
        index.apply(
            removed_ids=changes.removed_ids,
            added_ids=changes.added_ids,
            added_vectors=changes.added_vectors,
            upto_seq=target,
        )
        return index

    def _apply_changes(self, slot: _Slot) -> None:
        before = slot.index
        slot.index = self._catch_up(slot, before)
        if slot.index is not before:
            slot.generation += 1

    # -- updates -------------------------------------------------------------------------------

    def sync(self, collection: CollectionRecord, *, wait: bool = True) -> None:
        """Brings every index of the collection up to the catalog's current position.

        With ``wait=False`` an index whose writer is busy is skipped: that writer is applying the
        same changes (this is what queries use, so they never queue behind a retrain's swap).
        """
        for model in collection.models:
            slot = self._slot(collection, model)
            if not slot.mutex.acquire(blocking=wait):
                continue
            try:
                self._apply_changes(slot)
            finally:
                slot.mutex.release()
            self._after_change(slot)

    def _after_change(self, slot: _Slot) -> None:
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

    def _retrain(self, slot: _Slot) -> None:
        try:
            upto = self._catalog.collection_seq(slot.collection_id)
            batches = list(
                self._catalog.iter_embeddings(slot.collection_id, slot.model, upto_seq=upto)
            )
            if not batches or slot.dropped:
                return
            ids = np.concatenate([batch[0] for batch in batches])
            vectors = np.concatenate([batch[1] for batch in batches])
            del batches
            built = self.build_index(ids, vectors, slot.policy, last_seq=upto)
            del ids, vectors
            with slot.mutex:  # writers wait for the short catch-up; searches do not wait at all
                fresh = self._catch_up(slot, built)
                slot.index = fresh
                slot.generation += 1
            log.info(
                "collection %d / %s now uses a %s index (%d vectors, nprobe %d)",
                slot.collection_id,
                slot.model,
                fresh.spec.kind if fresh else "-",
                fresh.ntotal if fresh else 0,
                fresh.spec.nprobe if fresh else 0,
            )
            self._write(slot)
        except CollectionNotFoundError:
            log.info("collection %d was deleted during a retrain", slot.collection_id)
        finally:
            slot.retraining = False

    # -- snapshots -----------------------------------------------------------------------------

    def _schedule_snapshot(self, slot: _Slot) -> None:
        with self._pending_lock:
            if slot.snapshot_queued or self._closed:
                return
            slot.snapshot_queued = True

        def task() -> None:
            slot.snapshot_queued = False
            self._write(slot)

        self._submit(task)

    def _write(self, slot: _Slot) -> bool:
        """Writes the current index to its file unless the file already holds exactly it."""
        with slot.save_lock:
            index, generation = slot.index, slot.generation
            if index is None or slot.dropped:
                return False
            payload, spec, seq = index.serialize()
            if slot.saved == (generation, seq):
                return False
            header: dict[str, Any] = {
                "collection_id": slot.collection_id,
                "model": slot.model,
                "last_seq": seq,
                "count": index.ntotal,
                "spec": spec.to_dict(),
                "written_at": datetime.now(UTC).isoformat(),
            }
            size = write_snapshot(slot.path, header, payload)
            slot.saved = (generation, seq)
        log.info(
            "saved index of collection %d / %s at seq %d (%d bytes)",
            slot.collection_id,
            slot.model,
            seq,
            size,
        )
        return True

    def snapshot(self, collection: CollectionRecord) -> None:
        """Writes every changed index of the collection now (blocking)."""
        for model in collection.models:
            self._write(self._slot(collection, model))

    # -- background work -----------------------------------------------------------------------

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
            self.sync(collection, wait=False)
        index = slot.index  # one read: a concurrent swap cannot change it under this search
        if index is None:
            shape = (len(queries), k)
            return SearchOutput(
                np.full(shape, -np.inf, np.float32), np.full(shape, -1, np.int64), 0, False
            )
        scores, ids = index.search(queries, k, allowed_ids=allowed_ids, exhaustive=exhaustive)
        return SearchOutput(scores, ids, index.ntotal, index.approximate)

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

    def close(self, *, snapshot: bool = True) -> None:
        """Stops background work and (by default) saves every index that changed."""
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
                    self._write(slot)
                except OSError:
                    log.exception("could not save the index of collection %d", slot.collection_id)
