"""Freehold: own your data outright. Encrypted, deduplicated, erasure-coded backups."""

__version__ = "0.1.0"
