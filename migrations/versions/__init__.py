"""Catalog schema revisions, oldest first (``v0001_…``)."""
