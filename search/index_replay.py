"""Bringing an index to the catalog's position: load or build it, then replay the changes.

An index knows the last sequence number it contains; catching up applies the catalog's changes
after that number (tombstones out, new vectors in). The same path serves start-up replay after a
snapshot, live updates after a write, and writes made by other processes. The caller holds the
slot's mutex.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from vizdex.search.catalog import Catalog
from vizdex.search.index import IndexBackend, IndexPolicy, VectorIndex
from vizdex.search.index_file import move_aside, remove_stale_temporaries
from vizdex.search.index_slot import Slot, read_index_file, remove_unnamed_files
from vizdex.search.vector_source import CatalogSource, VectorSource

log = logging.getLogger(__name__)

# (source, policy, last_seq, dim) -> index: the store's build_index, which subclasses may wrap.
Build = Callable[[VectorSource, IndexPolicy, int, int], VectorIndex]


class Replay:
    def __init__(
        self, catalog: Catalog, backend: IndexBackend, build: Build, *, batch_size: int
    ) -> None:
        self._catalog = catalog
        self._backend = backend
        self._build = build
        self._batch = batch_size

    def source(self, slot: Slot, upto_seq: int) -> CatalogSource:
        """The slot's vectors up to ``upto_seq``, read from the catalog a batch at a time."""
        return CatalogSource(
            self._catalog, slot.collection_id, slot.model, upto_seq=upto_seq, batch_size=self._batch
        )

    def load(self, slot: Slot) -> bool:
        """Loads the slot's file (or builds from the catalog) and catches up.

        Returns whether the file on disk is behind what was loaded (a snapshot is due).
        """
        remove_stale_temporaries(slot.path)
        loaded = read_index_file(slot, self._catalog, self._backend)
        slot.index = self.build(slot) if loaded is None else self.catch_up(slot, loaded)
        slot.generation += 1
        if not self.consistent(slot):
            move_aside(slot.path, "index does not match the catalog after replay")
            slot.index = self.build(slot)
            slot.generation += 1
        if self.ensure_exact(slot):
            slot.generation += 1  # the snapshot on disk names the old vector file: write anew
        remove_unnamed_files(slot)
        return slot.index is not None and slot.saved != (slot.generation, slot.seq)

    def ensure_exact(self, slot: Slot) -> bool:
        """Rebuilds a re-ranked index's exact vectors from the catalog when their file was
        missing, torn, of another sequence number, holds other ids than the index, or has rows
        that failed their checksum.

        Returns whether it did. Rows come from the catalog up to the index's own position, so
        the file and the index then follow the same changes.
        """
        index = slot.index
        place = slot.policy.vector_place
        if index is None or place is None or index.spec.rerank == 0:
            return False
        held = None if index.exact_damaged else index.exact_ids()
        if held is not None:
            ids = index.ids()
            if len(held) == len(ids) and int(held.sum()) == int(ids.sum()):
                return False
            log.error(
                "exact vectors of collection %d / %s hold %d ids, the index %d: rebuilding them",
                slot.collection_id,
                slot.model,
                len(held),
                len(ids),
            )
        upto = index.last_seq
        source = self.source(slot, upto)
        exact = place.create(source.batches(), count=source.count, dim=index.dim, last_seq=upto)
        index.attach_exact(exact)
        log.info(
            "rebuilt the exact vectors of collection %d / %s from the catalog (%d)",
            slot.collection_id,
            slot.model,
            source.count,
        )
        return True

    def consistent(self, slot: Slot) -> bool:
        """Same vector count and id sum as the catalog, checked at one consistent position."""
        for _ in range(3):
            seq, count, id_sum = self._catalog.embedding_summary(slot.collection_id, slot.model)
            if seq != slot.seq:
                self.apply_changes(slot)
                continue
            index = slot.index
            if index is None:
                return count == 0
            ids = index.ids()
            return len(ids) == count and int(ids.sum()) == id_sum
        return True  # the catalog keeps moving: nothing suggests a mismatch

    def build(self, slot: Slot) -> VectorIndex | None:
        """A new index of every vector the catalog has for the slot, caught up."""
        upto = self._catalog.collection_seq(slot.collection_id)
        source = self.source(slot, upto)
        dim = source.dim()
        if dim is None:
            slot.empty_seq = upto
            return self.catch_up(slot, None)
        index = self._build(source, slot.policy, upto, dim)
        log.info(
            "built %s index for collection %d / %s from the catalog (%d vectors)",
            index.spec.kind,
            slot.collection_id,
            slot.model,
            index.ntotal,
        )
        return self.catch_up(slot, index)

    def catch_up(self, slot: Slot, index: VectorIndex | None) -> VectorIndex | None:
        """Applies the catalog's changes after the index's position (no lock: caller's job)."""
        target = self._catalog.collection_seq(slot.collection_id)
        current = index.last_seq if index is not None else slot.empty_seq
        if target <= current:
            return index
        if index is not None and current < self._catalog.pruned_seq(slot.collection_id):
            # Tombstones it would need are gone (``vizdex gc``): only a rebuild is exact.
            log.info(
                "index of collection %d / %s is older than its pruned tombstones: rebuilding",
                slot.collection_id,
                slot.model,
            )
            return self.build(slot)
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

    def apply_changes(self, slot: Slot) -> None:
        """Catches the slot's index up in place (a new generation if the index was replaced)."""
        before = slot.index
        slot.index = self.catch_up(slot, before)
        if slot.index is not before:
            slot.generation += 1
