"""The sources file, read once per process and again only when it changes.

``POST /api/v1/ingestions`` and ``POST /api/v1/lineage`` need the sources on
every request. Reading and validating the TOML file each time costs a read,
a parse and a validation per OpenLineage event; the server instead keeps the
sources it last loaded and, on each use, looks at the file's identity
(``os.stat``: device, inode, size, modification and change times). The same
path, environment and identity answer the sources already loaded.

A file's times have the granularity of the filesystem's clock (a few
milliseconds, up to seconds), so an edit that keeps the size and comes within
the same tick as the previous one keeps the identity too. So, as git does for
"racily clean" files, the identity alone is trusted only for a file last
modified well before it was read (``_SETTLED_NS``); otherwise, and whenever
the identity changed, the file's content is hashed, and only another content
is loaded again. A file that cannot be read or is invalid is reported exactly
as ``load_sources`` reports it, on every use, until it is fixed: nothing
invalid is kept. Tokens are no part of it: each source reads its
``token_env`` from the environment when used.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from chm.core.settings import Environment
from chm.ingestion import config
from chm.ingestion.config import Sources

# A file modified this long before it was read cannot change again within the
# same tick of its filesystem's clock (2 s: FAT's, the coarsest in use).
_SETTLED_NS = 2_000_000_000

# What tells one version of the file from another without reading it.
_Identity = tuple[int, int, int, int, int]


def _identity(path: Path) -> _Identity | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None  # load_sources says why
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def _digest(path: Path) -> bytes | None:
    try:
        return hashlib.sha256(path.read_bytes()).digest()
    except OSError:
        return None


@dataclass
class _Loaded:
    path: Path
    environment: Environment
    identity: _Identity
    digest: bytes
    # When the identity was taken (time.time_ns(), the clock of file times).
    seen_ns: int
    sources: Sources

    def settled(self) -> bool:
        return self.identity[3] < self.seen_ns - _SETTLED_NS


class SourcesCache:
    """``load_sources`` that reads the file again only when it changed; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded: _Loaded | None = None

    def load(self, path: Path | None, environment: Environment) -> Sources:
        """The sources of the file at ``path`` for a process of ``environment``;
        ``ConfigError`` as ``load_sources`` raises it."""
        seen_ns = time.time_ns()
        identity = _identity(path) if path is not None else None
        if path is None or identity is None:
            return config.load_sources(path, environment)
        with self._lock:
            loaded = self._loaded
        if loaded is not None and (loaded.path, loaded.environment) == (path, environment):
            if loaded.identity == identity and loaded.settled():
                return loaded.sources
            digest = _digest(path)
            if digest == loaded.digest:
                self._keep(_Loaded(path, environment, identity, digest, seen_ns, loaded.sources))
                return loaded.sources
        # Hashed before it is loaded: a change made in between is loaded again
        # next time, never missed.
        digest = _digest(path)
        sources = config.load_sources(path, environment)
        if digest is not None:
            self._keep(_Loaded(path, environment, identity, digest, seen_ns, sources))
        return sources

    def _keep(self, loaded: _Loaded) -> None:
        with self._lock:
            self._loaded = loaded
