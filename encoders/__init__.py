"""Encoders: model discovery and loading, preprocessing, batching, and the safe image door."""
