"""Storage that does not only grow: deletes take their files along, and a sweep removes the rest.

Crash-safe order: the catalog commits the delete first, then the files go. A crash between the
two leaves files no row names; ``sweep`` (``vizdex gc``, and a server every
``VIZDEX_GC_INTERVAL_S``) removes those. Files are content-addressed and shared between rows, so a
file goes only when no row in any collection names its content. A file younger than the grace
period (``VIZDEX_GC_GRACE_S``) stays for the next sweep: an ingest may have decided to reuse it
and not committed its row yet (``DataStore.files_lock`` and ``_reuse`` make that decision visible
as a fresh mtime).

The sweep also prunes tombstones that every index snapshot of this process includes (each index
is snapshotted first), and deletes finished jobs older than ``VIZDEX_JOB_RETENTION_S`` with their
work-queue chunks, so the catalog does not grow with deletes or with jobs either.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from vizdex.indexer.storage import DataStore
from vizdex.search import CollectionRecord, FileRef, SearchService, SourceKind

JOB_RETENTION_S = 30 * 86400.0  # as IndexerSettings.job_retention_s

log = logging.getLogger(__name__)


@dataclass
class SweepReport:
    """What one ``sweep`` (or delete) removed."""

    files_removed: int = 0
    bytes_freed: int = 0
    files_kept_young: int = 0
    tombstones_pruned: int = 0
    jobs_pruned: int = 0
    temporaries_removed: int = 0
    rows: dict[str, int] = field(default_factory=dict)


def _names(store: DataStore, ref: FileRef) -> list[str]:
    names = [store.thumbnail_name(ref.sha256)]
    if ref.source_kind is not SourceKind.PATH:  # folder images stay where they are
        names.append(store.original_name(ref.sha256, ref.format))
    return names


def _sha_of(file_name: str) -> str:
    return file_name.split(".", 1)[0].lower()


class StorageCollector:
    """Deletes images and collections with their files; sweeps what no row references."""

    def __init__(
        self,
        search: SearchService,
        store: DataStore,
        *,
        grace_s: float,
        job_retention_s: float = JOB_RETENTION_S,
    ) -> None:
        self._search = search
        self._store = store
        self._grace_s = grace_s
        self._job_retention_s = job_retention_s

    # -- deletes -------------------------------------------------------------------------------

    def delete_images(self, collection: str, image_ids: Sequence[int]) -> list[int]:
        record = self._search.get_collection(collection)
        refs = list(self._search.catalog.file_refs(record.id, image_ids))
        deleted = self._search.delete_images(collection, image_ids)
        self.release(refs)  # after the commit: a crash before this leaves work for the sweep
        return deleted

    def delete_collection(self, name: str) -> CollectionRecord:
        record = self._search.get_collection(name)
        refs = list(self._search.catalog.file_refs(record.id))
        deleted = self._search.delete_collection(name)
        self.release(refs)
        return deleted

    def release(self, refs: Iterable[FileRef]) -> SweepReport:
        """Unlinks the files of ``refs`` that no remaining row references (grace respected)."""
        wanted = {name: ref.sha256 for ref in refs for name in _names(self._store, ref)}
        report = SweepReport()
        if not wanted:
            return report
        with self._store.files_lock(exclusive=True):
            kept = self._referenced(set(wanted.values()))
            self._remove(report, [name for name in wanted if name not in kept])
        return report

    # -- the sweep -----------------------------------------------------------------------------

    def sweep(self, *, grace_s: float | None = None, prune: bool = True) -> SweepReport:
        """Removes files no row references, prunes tombstones every snapshot includes, and
        removes temporaries a killed process left."""
        grace = self._grace_s if grace_s is None else grace_s
        report = SweepReport()
        for folder, names in self._store.stored_files():
            if not names:
                self._remove(report, [], folders=[folder])
                continue
            with self._store.files_lock(exclusive=True):
                kept = self._referenced({_sha_of(name) for name in names})
                orphans = [f"{folder}/{name}" for name in names if f"{folder}/{name}" not in kept]
                self._remove(report, orphans, grace_s=grace)
        # Uploads spooled for queued jobs that will never run them (the job's collection was
        # deleted, or it was cancelled while its chunk was running). Young ones are spared: an
        # enqueue writes its spool before the chunks that name it are committed.
        with self._store.files_lock(exclusive=True):
            wanted = self._search.catalog.spool_references()
            spooled = [name for name in self._store.spooled_files() if name not in wanted]
            self._remove(report, spooled, grace_s=grace)
        if prune:
            report.tombstones_pruned = self.prune_tombstones()
        # A job's end was written by some process's clock (the database's for queued ones): a
        # retention of days is not upset by a few seconds of skew between them.
        cutoff = datetime.now(UTC) - timedelta(seconds=self._job_retention_s)
        report.jobs_pruned = self._search.catalog.prune_jobs(cutoff)
        report.temporaries_removed = self._store.sweep_temporaries(older_than_s=max(grace, 60.0))
        report.rows = self._search.catalog.row_counts()
        if report.files_removed or report.tombstones_pruned or report.jobs_pruned:
            log.info(
                "storage sweep: %d files (%d bytes) removed, %d tombstones and %d jobs pruned",
                report.files_removed,
                report.bytes_freed,
                report.tombstones_pruned,
                report.jobs_pruned,
            )
        return report

    def prune_tombstones(self) -> int:
        """Per collection: snapshot its indexes, then drop the tombstones they all include."""
        pruned = 0
        for record in self._search.list_collections():
            floor = self._search.indexes.snapshot_floor(record)
            pruned += self._search.catalog.prune_tombstones(record.id, floor)
        return pruned

    # -- helpers -------------------------------------------------------------------------------

    def _referenced(self, hashes: set[str]) -> set[str]:
        """The stored names that some row (any collection) references, among ``hashes``."""
        refs = self._search.catalog.refs_for_content(hashes)
        return {name for ref in refs for name in _names(self._store, ref)}

    def _remove(
        self,
        report: SweepReport,
        names: Sequence[str],
        *,
        grace_s: float | None = None,
        folders: Sequence[str] = (),
    ) -> None:
        grace = self._grace_s if grace_s is None else grace_s
        removed, freed = self._store.remove_files(names, min_age_s=grace)
        report.files_removed += removed
        report.bytes_freed += freed
        report.files_kept_young += len(names) - removed
        for folder in folders:
            with contextlib.suppress(OSError):
                self._store.resolve(folder).rmdir()


class PeriodicSweep:
    """Runs ``StorageCollector.sweep`` every ``interval_s`` on a thread until ``stop``."""

    def __init__(self, collector: StorageCollector, interval_s: float) -> None:
        self._collector = collector
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="vizdex-storage-gc", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._collector.sweep()
            except Exception:  # e.g. the database briefly unreachable: the next round
                log.exception("storage sweep failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
