"""What the data directory must keep, and what the catalog no longer needs: file references of
image rows, pruning of tombstones every index snapshot includes, and row counts.

Files are content-addressed and shared between rows (the same picture in two collections is one
thumbnail), so a file may go only when *no* row names its content: these reads answer that, and
the indexer's collector unlinks after the deleting transaction committed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from sqlalchemy import delete, func, select

from vizdex.search.catalog.session import CatalogSession, chunks
from vizdex.search.models import (
    Collection,
    Embedding,
    EmbeddingTombstone,
    Image,
    Job,
    VectorStorePosition,
    WorkItem,
)
from vizdex.search.records import FileRef, SourceKind

COUNTED = (Collection, Image, Embedding, EmbeddingTombstone, Job, WorkItem)


def _refs(rows: Iterable[tuple[str, str, str]]) -> list[FileRef]:
    return [FileRef(sha, fmt, SourceKind(kind)) for sha, fmt, kind in rows]


class FilesPart(CatalogSession):
    def file_refs(
        self, collection_id: int, image_ids: Sequence[int] | None = None, *, page: int = 20_000
    ) -> Iterator[FileRef]:
        """The file references of the collection's images (or of ``image_ids`` among them)."""
        columns = select(Image.sha256, Image.format, Image.source_kind)
        if image_ids is not None:
            for chunk in chunks(sorted({int(i) for i in image_ids})):
                with self._read() as session:
                    rows = session.execute(
                        columns.where(Image.collection_id == collection_id, Image.id.in_(chunk))
                    ).all()
                yield from _refs((sha, fmt, kind) for sha, fmt, kind in rows)
            return
        last = 0
        while True:
            with self._read() as session:
                page_rows = session.execute(
                    select(Image.id, Image.sha256, Image.format, Image.source_kind)
                    .where(Image.collection_id == collection_id, Image.id > last)
                    .order_by(Image.id)
                    .limit(page)
                ).all()
            if not page_rows:
                return
            last = int(page_rows[-1][0])
            yield from _refs((sha, fmt, kind) for _, sha, fmt, kind in page_rows)

    def refs_for_content(self, hashes: Iterable[str]) -> list[FileRef]:
        """Every row's reference, in any collection, to content among ``hashes`` (distinct)."""
        wanted = sorted({value.lower() for value in hashes})
        found: set[tuple[str, str, str]] = set()
        with self._read() as session:
            for chunk in chunks(wanted):
                rows = session.execute(
                    select(Image.sha256, Image.format, Image.source_kind)
                    .where(Image.sha256.in_(chunk))
                    .distinct()
                )
                found.update((sha, fmt, kind) for sha, fmt, kind in rows)
        return _refs(sorted(found))

    def prune_tombstones(self, collection_id: int, upto_seq: int) -> int:
        """Deletes the collection's tombstones with ``seq <= upto_seq`` (and no further than
        every external vector store has applied) and records the bound (``pruned_seq``), so an
        index older than it rebuilds rather than missing a deletion. Returns how many went."""
        with self._write() as session:
            collection = self._lock_if_present(session, collection_id)
            if collection is None:
                return 0
            bound = min(int(upto_seq), collection.last_seq)
            # An external store's follower (Milvus) replays tombstones too: never past it.
            followed = session.scalar(
                select(func.min(VectorStorePosition.applied_seq)).where(
                    VectorStorePosition.collection_id == collection_id
                )
            )
            if followed is not None:
                bound = min(bound, int(followed))
            if bound <= collection.pruned_seq:
                return 0
            result = session.execute(
                delete(EmbeddingTombstone).where(
                    EmbeddingTombstone.collection_id == collection_id,
                    EmbeddingTombstone.seq <= bound,
                )
            )
            collection.pruned_seq = bound
            return int(getattr(result, "rowcount", 0) or 0)

    def pruned_seq(self, collection_id: int) -> int:
        with self._read() as session:
            value = session.scalar(
                select(Collection.pruned_seq).where(Collection.id == collection_id)
            )
        return int(value or 0)

    def vacuum(self) -> None:
        """Gives free pages back to the file system (after many deletes), outside a transaction."""
        # The DB-API connection itself: SQLAlchemy's would begin a transaction (our SQLite hook
        # emits BEGIN), and VACUUM runs only outside one.
        raw = self._engine.raw_connection()
        try:
            if self._engine.dialect.name == "postgresql":
                raw.driver_connection.autocommit = True  # type: ignore[union-attr]
            cursor = raw.cursor()
            cursor.execute("VACUUM")
            if self._engine.dialect.name == "sqlite":  # VACUUM went through the WAL: empty it
                cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            cursor.close()
        finally:
            raw.close()

    def row_counts(self) -> dict[str, int]:
        """Rows per catalog table (``vizdex gc`` reports them; tests check nothing is left)."""
        with self._read() as session:
            return {
                table.__tablename__: int(
                    session.scalar(select(func.count()).select_from(table)) or 0
                )
                for table in COUNTED
            }
