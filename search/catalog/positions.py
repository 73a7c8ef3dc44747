"""Where external vector stores (Milvus) stand in the change feed: their followers' watermarks."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from vizdex.search.catalog.session import CatalogSession
from vizdex.search.models import VectorStorePosition


@dataclass(frozen=True)
class StorePosition:
    collection_id: int
    model: str
    applied_seq: int
    index_type: str


def _position(row: VectorStorePosition) -> StorePosition:
    return StorePosition(row.collection_id, row.model, int(row.applied_seq), row.index_type)


class PositionsPart(CatalogSession):
    def store_position(self, store: str, collection_id: int, model: str) -> StorePosition | None:
        with self._read() as session:
            row = session.get(VectorStorePosition, (store, collection_id, model))
            return _position(row) if row is not None else None

    def store_positions(self, store: str) -> list[StorePosition]:
        with self._read() as session:
            rows = session.scalars(
                select(VectorStorePosition).where(VectorStorePosition.store == store)
            ).all()
            return [_position(row) for row in rows]

    def set_store_position(
        self,
        store: str,
        collection_id: int,
        model: str,
        applied_seq: int,
        *,
        index_type: str,
    ) -> None:
        """Records the watermark (creating the row the first time); only after the store holds
        every change up to ``applied_seq``, so a restart never skips one."""
        with self._write() as session:
            row = session.get(VectorStorePosition, (store, collection_id, model))
            if row is None:
                session.add(
                    VectorStorePosition(
                        store=store,
                        collection_id=collection_id,
                        model=model,
                        applied_seq=applied_seq,
                        index_type=index_type,
                    )
                )
            else:
                row.applied_seq = applied_seq
                row.index_type = index_type
