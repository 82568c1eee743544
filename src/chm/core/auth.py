"""Bearer-token access to /api/v1 in production (SE-002, SE-004)."""

from __future__ import annotations

import hmac

from fastapi import Request

from chm.core.errors import Unauthorized
from chm.core.settings import Environment, Settings


def require_api_token(request: Request) -> None:
    settings: Settings = request.app.state.settings
    if settings.env is not Environment.production or settings.api_token is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, presented = header.partition(" ")
    expected = settings.api_token.get_secret_value()
    # compare_digest runs in time independent of where the strings differ.
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        presented.strip().encode(), expected.encode()
    ):
        raise Unauthorized("A valid 'Authorization: Bearer <token>' header is required")
