"""An event's body as sent: bounded in size, as sent and once inflated, and gzip."""

from __future__ import annotations

import zlib

from fastapi import Request

from chm.core.errors import BadRequest, PayloadTooLarge


async def read_body(request: Request) -> bytes:
    """The request body, inflated when it says gzip; 413 past ``CHM_MAX_BODY_BYTES``."""
    # The body as sent is bounded by chm.core.body_limit; inflated, by the same limit.
    limit: int = request.app.state.settings.max_body_bytes
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise PayloadTooLarge(f"the event is larger than {limit} bytes")
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return bytes(raw)
    if encoding != "gzip":
        raise BadRequest(f"Content-Encoding {encoding!r} is not supported (gzip is)")
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        body = inflater.decompress(bytes(raw), limit + 1)
    except zlib.error:
        raise BadRequest("the body is not valid gzip") from None
    if len(body) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(f"the event is larger than {limit} bytes uncompressed")
    if not inflater.eof:
        raise BadRequest("the body is not valid gzip (truncated)")
    return body
