"""Ingestion: pull run history from the platforms' own APIs, idempotently (FR-011..FR-015)."""
