"""Collections: model states and query defaults (models change while serving); pruned tombstones.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

Existing collections get every model ready (``{}``), no stored defaults (the model rule picks, as
before) and nothing pruned (``0``).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("collections") as batch:
        # Defaults fill existing rows; new rows get theirs from the model.
        batch.add_column(
            sa.Column("model_states", sa.JSON(), nullable=False, server_default=sa.text("'{}'"))
        )
        batch.add_column(sa.Column("text_model", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("image_model", sa.String(length=200), nullable=True))
        batch.add_column(
            sa.Column("pruned_seq", sa.BigInteger(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("collections") as batch:
        batch.alter_column("model_states", server_default=None)
        batch.alter_column("pruned_seq", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("collections") as batch:
        batch.drop_column("pruned_seq")
        batch.drop_column("image_model")
        batch.drop_column("text_model")
        batch.drop_column("model_states")
