"""vizdex: self-hosted image search with built-in CLIP and DINOv3 encoders.

The one import name of the distribution. Its rooms, lowest first (each imports only those before
it): ``core`` ← ``imaging`` ← ``encoders`` ← ``search`` ← ``indexer`` ← ``web`` / ``cli``;
``migrations`` holds the Alembic history. ARCHITECTURE.md describes them.
"""

__version__ = "0.2.0"
