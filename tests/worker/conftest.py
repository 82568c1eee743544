"""The worker's tests use the ingestion tests' fake platforms and the alert
tests' fake receivers, over real sockets."""

from __future__ import annotations

import sys
from pathlib import Path

for folder in ("ingestion", "alerts"):
    path = str(Path(__file__).resolve().parent.parent / folder)
    if path not in sys.path:
        sys.path.insert(0, path)
