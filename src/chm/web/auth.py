"""Signing in to the pages (production only): the API token, given once on a
form, kept in a signed session cookie.

The cookie ``chm_session`` holds no secret, only a signed, timestamped mark
(itsdangerous): its key is HMAC-SHA256 of ``CHM_API_TOKEN``, so rotating the
token signs everyone out. It is ``HttpOnly``, ``SameSite=Strict``, ``Path=/``,
``Secure`` when the request came over https, and lasts ``SESSION_MAX_AGE``.
It opens the pages and nothing else: ``/api/v1`` and ``/metrics`` take only
the bearer token (``chm.core.auth``), whatever cookie comes with a request.
In development (no token needed by the API) the pages need no sign-in either.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from datetime import datetime, timedelta

from fastapi import Request
from fastapi.responses import Response
from itsdangerous import BadSignature, TimestampSigner, URLSafeTimedSerializer

from chm.core.settings import Environment, Settings

COOKIE = "chm_session"
SESSION_MAX_AGE = timedelta(hours=12)
_SALT = "chm-web-session"
_MARK = {"v": 1}


class SignInRequired(Exception):
    """A page asked for without a valid session cookie (production)."""


def session_token(settings: Settings) -> str | None:
    """The token the sign-in form takes, or None when the pages need no sign-in."""
    if settings.env is not Environment.production or settings.api_token is None:
        return None
    token = settings.api_token.get_secret_value()
    return token or None


def token_matches(presented: str, expected: str) -> bool:
    """Constant time, as the API compares its bearer token."""
    return hmac.compare_digest(presented.encode(), expected.encode())


def _serializer(token: str, clock: Callable[[], datetime]) -> URLSafeTimedSerializer:
    # The signer's time is the app's clock: issuing and expiry both follow it.
    class ClockSigner(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(clock().timestamp())

    key = hmac.new(token.encode(), b"chm-web-session", hashlib.sha256).digest()
    return URLSafeTimedSerializer(key, salt=_SALT, signer=ClockSigner)


def issue_cookie(token: str, clock: Callable[[], datetime]) -> str:
    return _serializer(token, clock).dumps(_MARK)


def cookie_is_valid(value: str | None, token: str, clock: Callable[[], datetime]) -> bool:
    """Signed with this token's key, not older than SESSION_MAX_AGE (nor from the future)."""
    if not value:
        return False
    serializer = _serializer(token, clock)
    try:
        mark, signed_at = serializer.loads(
            value, max_age=int(SESSION_MAX_AGE.total_seconds()), return_timestamp=True
        )
    except BadSignature:  # tampered, signed with another token, or expired
        return False
    return bool(mark == _MARK and signed_at <= clock())


def is_signed_in(request: Request, token: str | None, clock: Callable[[], datetime]) -> bool:
    return token is None or cookie_is_valid(request.cookies.get(COOKIE), token, clock)


def set_session_cookie(response: Response, request: Request, value: str) -> None:
    response.set_cookie(
        COOKIE,
        value,
        max_age=int(SESSION_MAX_AGE.total_seconds()),
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )


def clear_session_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        COOKIE, path="/", secure=request.url.scheme == "https", httponly=True, samesite="strict"
    )
