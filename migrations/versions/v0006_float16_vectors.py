"""Vectors are stored as float16 instead of float32: half the catalog's largest table.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

Only the bytes of ``embeddings.vector`` change (the column stays binary): each float32 row is
rewritten as float16, in batches, in the order of (collection, seq). A row already ``2 * dim``
bytes long is float16 already and left alone, so an interrupted upgrade can simply run again.
Values beyond float16's range (±65504, never produced by an encoder: their vectors are unit
length) saturate; new writes refuse them. The downgrade widens float16 back to float32 (the
values keep float16's precision).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 5000
FLOAT16_MAX = float(np.finfo(np.float16).max)

embeddings = sa.table(
    "embeddings",
    sa.column("image_id", sa.BigInteger()),
    sa.column("model", sa.String()),
    sa.column("collection_id", sa.Integer()),
    sa.column("seq", sa.BigInteger()),
    sa.column("dim", sa.Integer()),
    sa.column("vector", sa.LargeBinary()),
)


def _to_float16(data: bytes) -> bytes:
    values = np.clip(np.frombuffer(data, dtype="<f4"), -FLOAT16_MAX, FLOAT16_MAX)
    return np.asarray(values, dtype="<f2").tobytes()


def _to_float32(data: bytes) -> bytes:
    return np.frombuffer(data, dtype="<f2").astype("<f4").tobytes()


def _rewrite(from_width: int, convert: Callable[[bytes], bytes]) -> None:
    """Rewrites every vector ``from_width`` bytes per value wide with ``convert``."""
    connection = op.get_bind()
    update = (
        sa.update(embeddings)
        .where(
            embeddings.c.image_id == sa.bindparam("key_image_id"),
            embeddings.c.model == sa.bindparam("key_model"),
        )
        .values(vector=sa.bindparam("new_vector"))
    )
    position = (-1, -1)
    while True:
        rows = connection.execute(
            sa.select(
                embeddings.c.collection_id,
                embeddings.c.seq,
                embeddings.c.image_id,
                embeddings.c.model,
                embeddings.c.dim,
                embeddings.c.vector,
            )
            .where(sa.tuple_(embeddings.c.collection_id, embeddings.c.seq) > position)
            .order_by(embeddings.c.collection_id, embeddings.c.seq)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        changed = [
            {
                "key_image_id": row.image_id,
                "key_model": row.model,
                "new_vector": convert(bytes(row.vector)),
            }
            for row in rows
            if len(row.vector) == from_width * row.dim
        ]
        if changed:
            connection.execute(update, changed)
        position = (rows[-1].collection_id, rows[-1].seq)


def upgrade() -> None:
    _rewrite(4, _to_float16)


def downgrade() -> None:
    _rewrite(2, _to_float32)
