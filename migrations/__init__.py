"""Alembic environment and revisions of the catalog schema (``vizdex db upgrade`` applies them)."""
