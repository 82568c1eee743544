"""Who may write what: the bearer key against the namespace sources (SE-001)."""

from __future__ import annotations

import hmac
import logging
import os

from fastapi import Request

from chm.ingestion.config import Sources
from chm.ingestion.sources import AnySource, TokenMissing

logger = logging.getLogger("chm.ingestion.lineage")


def bearer_key(request: Request) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header, if any."""
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    return key.strip() or None if scheme.lower() == "bearer" else None


def keyed_sources(sources: Sources, key: str) -> list[AnySource]:
    """The namespace sources whose token is ``key`` (compared in constant time)."""
    matched = []
    for source in sources.all:
        if source.openlineage_namespace is None:
            continue
        try:
            token = source.token(os.environ)
        except TokenMissing:
            logger.warning("source %r: token_env is not set; its namespace refuses events",
                           source.name)  # fmt: skip
            continue
        if token is not None and hmac.compare_digest(
            token.get_secret_value().encode(), key.encode()
        ):
            matched.append(source)
    return matched
