"""Metadata changes join the change feed, and Milvus followers get fencing tokens.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02

``images.metadata_seq``: the sequence number of the image's last metadata change (or of a request
to mirror the image again), so a vector store that mirrors metadata (Milvus) follows it from the
feed whichever process made the change. Existing rows get NULL: their metadata is what the
store already mirrored (a store starting from 0 mirrors every row anyway).

``vector_store_terms``: one row per external vector store, with the term of its current follower.
Each new leader takes the next term; a watermark write whose term is no longer the current one
is refused, so a leader that was paused while another took over cannot move the watermark back.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("metadata_seq", sa.BigInteger(), nullable=True))
    op.create_index(
        "ix_images_collection_metadata_seq", "images", ["collection_id", "metadata_seq"]
    )
    op.create_table(
        "vector_store_terms",
        sa.Column("store", sa.String(length=300), nullable=False),
        sa.Column("term", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("store", name=op.f("pk_vector_store_terms")),
    )


def downgrade() -> None:
    op.drop_table("vector_store_terms")
    op.drop_index("ix_images_collection_metadata_seq", table_name="images")
    with op.batch_alter_table("images") as batch:
        batch.drop_column("metadata_seq")
