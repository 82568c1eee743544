"""Bearer-token access to /api/v1 in production (SE-002, SE-004)."""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from chm.core.errors import Unauthorized, render_error


class BearerTokenMiddleware:
    """Every request under ``prefix`` must carry ``Authorization: Bearer <token>``,
    matched or not (an unknown path answers 401 too, revealing nothing).
    The comparison runs in constant time. ``exempt`` paths check a key of their
    own (the OpenLineage intake takes each namespace's key, never none)."""

    def __init__(
        self, app: ASGIApp, *, token: str, prefix: str, exempt: tuple[str, ...] = ()
    ) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()
        self.prefix = prefix
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and (scope["path"] == self.prefix or scope["path"].startswith(self.prefix + "/"))
            and scope["path"] not in self.exempt
        ):
            presented = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(presented, self.expected):
                response = render_error(
                    Unauthorized("A valid 'Authorization: Bearer <token>' header is required")
                )
                response.headers["WWW-Authenticate"] = "Bearer"
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
