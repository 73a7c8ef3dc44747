"""The precisions a collection's vectors were computed in: checked and recorded with each write.

Each model's entry lists every precision its stored vectors come from. A write in a new precision
joins them only if it may mix with each (``vizdex.core.precision.can_mix``: within the documented
cosine tolerance); otherwise the whole write is refused, before anything is stored. A model whose
vectors are all gone (its images deleted) starts afresh: nothing is left to be compared with.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from vizdex.core.precision import MIX_TOLERANCE, Precision, worst_cosine
from vizdex.core.precision import clashes as clashing_precisions
from vizdex.search.errors import PrecisionMismatchError
from vizdex.search.models import Collection, Embedding


def settle_precisions(
    session: Session,
    collection: Collection,
    precisions: Mapping[str, Precision],
    *,
    record: bool,
) -> None:
    """Refuse ``precisions`` (model -> precision of new vectors) that may not join the stored
    ones; with ``record``, add them to the collection's row (the caller holds its lock)."""
    recorded: dict[str, list[str]] = {
        model: list(names) for model, names in (collection.precisions or {}).items()
    }
    changed = False
    for model, precision in precisions.items():
        names = recorded.get(model, [])
        if names and not _has_vectors(session, collection.id, model):
            names, changed = [], True
        clash = clashing_precisions(names, precision)
        if clash:
            raise PrecisionMismatchError(
                _refusal(collection.name, model, clash, precision),
                model=model,
                recorded=names,
                precision=precision.value,
            )
        if precision.value not in names:
            names, changed = [*names, precision.value], True
        recorded[model] = names
    if record and changed:
        collection.precisions = recorded  # a new object: SQLAlchemy sees JSON changes by identity


def _has_vectors(session: Session, collection_id: int, model: str) -> bool:
    found = session.scalar(
        select(Embedding.image_id)
        .where(Embedding.collection_id == collection_id, Embedding.model == model)
        .limit(1)
    )
    return found is not None


def _refusal(collection: str, model: str, clash: list[str], precision: Precision) -> str:
    known = [Precision(name) for name in clash if name in Precision.__members__.values()]
    bound = min((worst_cosine(old, precision) for old in known), default=0.0)
    return (
        f"collection {collection!r} holds {model!r} vectors computed in {', '.join(clash)}; "
        f"{precision.value} vectors are only guaranteed within cosine {bound:.3f} of them, below "
        f"the {MIX_TOLERANCE} that vectors sharing a collection must keep. Run with "
        f"VIZDEX_DTYPE={clash[0]} for this collection, or use a new collection for "
        f"{precision.value} vectors"
    )
