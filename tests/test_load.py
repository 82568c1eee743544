"""A 10-second version of bench/load.py: 50 writers and 50 readers against a
real `chm serve` on PostgreSQL; no 5xx, every acknowledged run stored exactly once."""

from __future__ import annotations

import asyncio

import pytest
from bench.load import chm_server, run_load

from live import free_port


@pytest.mark.postgres_only
def test_ten_seconds_of_concurrent_writers_and_readers(db_url):
    with chm_server(db_url, free_port()) as base:
        result = asyncio.run(run_load(base, seconds=10, writers=50, readers=50))
    summary = result.summary()
    print(summary)
    assert result.server_errors == 0, summary
    assert result.transport_errors == 0, summary
    assert len(result.acknowledged) > 100, summary
    assert result.missing == 0 and result.stored_duplicates == 0, summary
    for kind in ("POST run", "GET latest", "GET summary"):
        assert result.percentiles(kind)["count"] > 0, kind
