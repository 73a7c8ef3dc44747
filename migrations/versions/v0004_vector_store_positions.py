"""Watermarks of external vector stores (Milvus) that follow the catalog's change feed.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

A new table only: existing catalogs gain no rows, and a Milvus store starts from 0 (it builds
its collections from the catalog).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "vector_store_positions",
        sa.Column("store", sa.String(length=300), nullable=False),
        sa.Column("collection_id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("applied_seq", sa.BigInteger(), nullable=False),
        sa.Column("index_type", sa.String(length=32), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["collection_id"],
            ["collections.id"],
            name=op.f("fk_vector_store_positions_collection_id_collections"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "store", "collection_id", "model", name=op.f("pk_vector_store_positions")
        ),
    )


def downgrade() -> None:
    op.drop_table("vector_store_positions")
