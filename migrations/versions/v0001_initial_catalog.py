"""Initial catalog: collections, images, embeddings, embedding tombstones, jobs.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _timestamp(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _collection_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["collection_id"],
        ["collections.id"],
        name=op.f(f"fk_{table}_collection_id_collections"),
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "collections",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("models", sa.JSON(), nullable=False),
        sa.Column("index_factory", sa.String(length=200), nullable=True),
        sa.Column("exact_max", sa.Integer(), nullable=True),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_collections")),
        sa.UniqueConstraint("name", name=op.f("uq_collections_name")),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "images",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("collection_id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("source_kind", sa.String(length=16), nullable=False),
        sa.Column("source_uri", sa.Text(), nullable=True),
        sa.Column("original_name", sa.Text(), nullable=True),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("byte_size", sa.BigInteger(), nullable=False),
        sa.Column("source_size", sa.BigInteger(), nullable=True),
        sa.Column("source_mtime_ns", sa.BigInteger(), nullable=True),
        sa.Column("thumbnail_path", sa.Text(), nullable=True),
        sa.Column("user_metadata", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        _collection_fk("images"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_images")),
        sa.UniqueConstraint("collection_id", "sha256", name=op.f("uq_images_collection_id_sha256")),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_images_collection_created", "images", ["collection_id", "created_at"])
    op.create_index("ix_images_collection_source", "images", ["collection_id", "source_uri"])
    op.create_index("ix_images_collection_status", "images", ["collection_id", "status"])

    op.create_table(
        "embeddings",
        sa.Column("image_id", sa.BigInteger(), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("collection_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        _collection_fk("embeddings"),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["images.id"],
            name=op.f("fk_embeddings_image_id_images"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("image_id", "model", name=op.f("pk_embeddings")),
    )
    op.create_index(
        "ix_embeddings_replay", "embeddings", ["collection_id", "model", "seq"], unique=True
    )

    op.create_table(
        "embedding_tombstones",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("collection_id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("image_id", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        _timestamp("deleted_at"),
        _collection_fk("embedding_tombstones"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_embedding_tombstones")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_embedding_tombstones_replay",
        "embedding_tombstones",
        ["collection_id", "model", "seq"],
    )

    op.create_table(
        "jobs",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("collection_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("failures", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        _timestamp("finished_at", nullable=True),
        _collection_fk("jobs"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_jobs_collection_state", "jobs", ["collection_id", "state"])
    op.create_index("ix_jobs_state", "jobs", ["state"])


def downgrade() -> None:
    op.drop_index("ix_jobs_state", table_name="jobs")
    op.drop_index("ix_jobs_collection_state", table_name="jobs")
    op.drop_table("jobs")
    op.drop_index("ix_embedding_tombstones_replay", table_name="embedding_tombstones")
    op.drop_table("embedding_tombstones")
    op.drop_index("ix_embeddings_replay", table_name="embeddings")
    op.drop_table("embeddings")
    op.drop_index("ix_images_collection_status", table_name="images")
    op.drop_index("ix_images_collection_source", table_name="images")
    op.drop_index("ix_images_collection_created", table_name="images")
    op.drop_table("images")
    op.drop_table("collections")
