"""Collections record the compute precision of their vectors, per model.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

Existing collections start with none recorded (``{}``): their vectors may come from float32 on a
CPU or float16 on a GPU, which nothing stored tells apart. The next write records its precision.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("collections") as batch:
        # The default fills existing rows; new rows get theirs from the model (`default=dict`).
        batch.add_column(
            sa.Column("precisions", sa.JSON(), nullable=False, server_default=sa.text("'{}'"))
        )
    with op.batch_alter_table("collections") as batch:
        batch.alter_column("precisions", server_default=None)


def downgrade() -> None:
    # On SQLite this copies and drops the collections table; images and embeddings survive it
    # (the same path as the migration tests' later revision takes).
    with op.batch_alter_table("collections") as batch:
        batch.drop_column("precisions")
