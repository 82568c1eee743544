"""A request cut short by the server's shutdown is answered 503 problem+json.

``chm serve`` bounds its graceful shutdown (``CHM_SHUTDOWN_TIMEOUT_S``): past
it, uvicorn cancels the requests still in flight, and would answer those that
had not started their response with its own plain-text 500. This pure ASGI
middleware, outermost, answers them instead with a 503 problem+json and a
``Retry-After``: the client learns that nothing was acknowledged. It is not
told that nothing was done: a write whose handler runs in a worker thread
cannot be stopped by the cancellation and may still commit, so the answer
says the outcome is unknown (a retry of a write that names its run,
``external_run_id``, is safe; the upsert makes it count once).
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chm.core.errors import ServiceUnavailable, render_error

RETRY_AFTER_S = 5


class ShutdownAnswerMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except asyncio.CancelledError:
            if not started:
                response = render_error(
                    ServiceUnavailable(
                        "The server is shutting down and cut this request short; "
                        "whether it took effect is unknown"
                    )
                )
                response.headers["Retry-After"] = str(RETRY_AFTER_S)
                await response(scope, receive, send)
            raise
