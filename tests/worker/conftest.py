"""The worker's tests use the ingestion tests' fake platforms over real sockets."""

from __future__ import annotations

import sys
from pathlib import Path

INGESTION_TESTS = str(Path(__file__).resolve().parent.parent / "ingestion")
if INGESTION_TESTS not in sys.path:
    sys.path.insert(0, INGESTION_TESTS)
