"""The request body limit (``CHM_MAX_BODY_BYTES``): a body past it is a 413,
refused before it is read whole (issue 10 §7)."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chm.core.errors import PayloadTooLarge, render_error


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body passes the limit. An
    HTTPException, so that FastAPI's body reading lets it through (it turns
    any other error there into a 400) and the app's handler renders it as
    the same 413 problem+json."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, _detail(limit))


def _detail(limit: int) -> str:
    return f"The request body is larger than {limit} bytes (CHM_MAX_BODY_BYTES)"


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed length itself
    return None


class BodyLimitMiddleware:
    """A pure ASGI middleware (nothing buffered, nothing read ahead): a declared
    ``Content-Length`` over ``max_bytes`` is answered 413 at once, before any
    of the body is read; a body without one (chunked) is counted as the app
    reads it and stops at the first chunk past the limit, with the same 413."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _content_length(scope)
        if length is not None and length > self.max_bytes:
            await render_error(PayloadTooLarge(_detail(self.max_bytes)))(scope, receive, send)
            return

        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except BodyTooLarge:
            # Read outside the app's exception handlers (another middleware):
            # answer here, unless an answer has begun.
            if started:
                raise
            await render_error(PayloadTooLarge(_detail(self.max_bytes)))(scope, receive, send)
