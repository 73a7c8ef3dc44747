"""Where external vector stores (Milvus) stand in the change feed: their followers' watermarks,
and the terms (fencing tokens) that make a watermark write conditional on still leading."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from vizdex.search.catalog.session import CatalogSession
from vizdex.search.errors import FollowerFencedError
from vizdex.search.models import VectorStorePosition, VectorStoreTerm, utcnow

LAPSED = datetime(1970, 1, 1, tzinfo=UTC)  # a lease's renewal time once its holder let it go


@dataclass(frozen=True)
class StorePosition:
    collection_id: int
    model: str
    applied_seq: int
    index_type: str


def _position(row: VectorStorePosition) -> StorePosition:
    return StorePosition(row.collection_id, row.model, int(row.applied_seq), row.index_type)


def _check_term(session: Session, store: str, term: int, *, lock: bool) -> None:
    """Raises FollowerFencedError unless ``term`` is the store's current one. With ``lock`` the
    row is read locked (FOR SHARE): a takeover that bumps it waits for this transaction, and
    this one for a takeover in progress, so a write never commits under an overtaken term."""
    query = select(VectorStoreTerm.term).where(VectorStoreTerm.store == store)
    current = session.scalars(query.with_for_update(read=True) if lock else query).one_or_none()
    if current is None or int(current) != term:
        raise FollowerFencedError(
            f"the follower of {store} holds term {term} but the catalog's is {current}: another "
            "process took over following it",
            store=store,
            term=term,
            current_term=current,
        )


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

    def begin_store_term(self, store: str) -> int:
        """The next term of ``store``'s follower (1 the first time): the caller just became it."""
        with self._write() as session:
            row = session.get(VectorStoreTerm, store, with_for_update=True, populate_existing=True)
            if row is None:
                row = VectorStoreTerm(store=store, term=1)
                session.add(row)
            else:
                row.term = int(row.term) + 1
            session.flush()
            return int(row.term)

    def claim_store_lease(self, store: str, term: int | None, lease_s: float) -> int | None:
        """The follower lease of ``store`` where no advisory lock picks one (SQLite): the holder
        of ``term`` renews it; another process takes the next term once it went ``lease_s``
        without renewal (its holder stopped, was killed or stalls). Returns the term this
        caller holds now, None while another holds a live lease."""
        now = utcnow()
        with self._write() as session:
            row = session.get(VectorStoreTerm, store, with_for_update=True, populate_existing=True)
            if row is None:
                session.add(VectorStoreTerm(store=store, term=1, updated_at=now))
                return 1
            if term is not None and int(row.term) == term:
                row.updated_at = now
                return term
            if (now - row.updated_at).total_seconds() < lease_s:
                return None
            row.term, row.updated_at = int(row.term) + 1, now
            return int(row.term)

    def end_store_lease(self, store: str, term: int) -> None:
        """Lets the lease of ``term`` lapse now (its holder stops): the next process may take
        it without waiting ``lease_s``."""
        with self._write() as session:
            row = session.get(VectorStoreTerm, store, with_for_update=True, populate_existing=True)
            if row is not None and int(row.term) == term:
                row.updated_at = LAPSED

    def store_term(self, store: str) -> int | None:
        with self._read() as session:
            row = session.get(VectorStoreTerm, store)
            return int(row.term) if row is not None else None

    def check_store_term(self, store: str, term: int) -> None:
        """FollowerFencedError unless ``term`` is still current (asked before writing to the
        store, so an overtaken leader stops before its batch, not only at the watermark)."""
        with self._read() as session:
            _check_term(session, store, term, lock=False)

    def set_store_position(
        self,
        store: str,
        collection_id: int,
        model: str,
        applied_seq: int,
        *,
        index_type: str,
        term: int | None = None,
    ) -> bool:
        """Records the watermark (creating the row the first time); only after the store holds
        every change up to ``applied_seq``, so a restart never skips one.

        With ``term``: only while it is the store's current term (FollowerFencedError
        otherwise). Returns False, writing nothing, when the collection was deleted or the model
        removed meanwhile (the caller drops what it just wrote for them).
        """
        with self._write() as session:
            if term is not None:
                _check_term(session, store, term, lock=True)
            collection = self._lock_if_present(session, collection_id)
            if collection is None or model not in collection.models:
                return False
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
            return True


def forget_positions(session: Session, collection_id: int, model: str) -> None:
    """Every store's watermark of a model that leaves the collection (``remove_model``)."""
    session.execute(
        delete(VectorStorePosition).where(
            VectorStorePosition.collection_id == collection_id, VectorStorePosition.model == model
        )
    )
