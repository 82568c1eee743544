"""The channel interface: one module per kind under ``chm.alerts.channels``,
each ending in ``register(Channel(...))`` (like ingestion's platforms)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import parse_qsl, unquote, urlsplit

import httpx

from chm.alerts.message import Message
from chm.core.redaction import Redactor
from chm.core.settings import Settings
from chm.core.timeutil import retry_after_seconds, utcnow


class Undeliverable(Exception):
    """The destination cannot be sent to as configured (unknown kind, unknown
    name, a variable or server not set): the delivery ends ``undeliverable``
    with this message as its reason. Never contains a secret."""


class SendFailed(Exception):
    """One attempt failed. ``retryable``: worth another attempt (a timeout, a
    connection error, 429, 5xx); ``retry_after``: the wait the receiver asked
    for, in seconds. The message is redacted: no URL, key or token."""

    def __init__(self, reason: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retryable = retryable
        self.retry_after = retry_after


@dataclass(frozen=True)
class Resolved:
    """A destination resolved against the configuration: its secrets in memory
    only, never stored, logged or returned (``secrets`` lists them for the
    redactor)."""

    kind: str
    target: str
    name: str | None = None  # the named destination, when it is one
    # Secrets: kept out of repr(), so that no log line or traceback shows them.
    url: str | None = field(default=None, repr=False)
    # The webhook's HMAC key; for email, the SMTP password.
    secret: str | None = field(default=None, repr=False)
    routing_key: str | None = field(default=None, repr=False)  # PagerDuty
    token: str | None = field(default=None, repr=False)  # Slack bot token
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def secrets(self) -> list[str]:
        """The secret values, and the parts of the URL that carry one on their own
        (a token in its path, a signature in its query, a password), so that an
        answer echoing only its path gives nothing away either."""
        values = [v for v in (self.url, self.secret, self.routing_key, self.token) if v]
        return values + (url_secrets(self.url) if self.url else [])


# A path segment or query value this long is a token (Slack's incoming-webhook
# token, a Teams workflow's sig...); shorter ones ("services", "v2") are words.
_TOKEN_LENGTH = 16


def url_secrets(url: str) -> list[str]:
    """The parts of ``url`` that may be secrets on their own: its password, each
    long path segment, each long query value."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return []
    found = [password] if password else []
    found += [s for s in parts.path.split("/") if len(s) >= _TOKEN_LENGTH]
    found += [
        unquote(value)
        for _name, value in parse_qsl(parts.query, keep_blank_values=False)
        if len(value) >= _TOKEN_LENGTH
    ]
    # The raw query value too: an answer may echo it still percent-encoded.
    found += [
        piece.partition("=")[2]
        for piece in parts.query.split("&")
        if len(piece.partition("=")[2]) >= _TOKEN_LENGTH
    ]
    return found


@dataclass
class SendContext:
    """What every send may use: the settings (SMTP, Slack's API, timeouts) and
    one HTTP client (httpx) shared by the worker's sends; ``clock`` reads a
    ``Retry-After`` given as an HTTP date."""

    settings: Settings
    http: httpx.Client
    clock: Callable[[], datetime] = utcnow


Sender = Callable[[Message, Resolved, SendContext], None]
# Resolves a target that is not a name (Slack's "#channel", an email address)
# against the settings and the environment: a Resolved, None when the target
# is a name (a [[destinations]] entry), or Undeliverable.
TargetResolver = Callable[[str, Settings, Mapping[str, str]], "Resolved | None"]


@dataclass(frozen=True)
class NamedFields:
    """The fields a named destination of one kind has ([[destinations]] in the
    CHM_CONFIG file): each names an environment variable (``url_env`` → its
    ``Resolved.url``, ``secret_env`` → ``secret``, ``routing_key_env`` →
    ``routing_key``)."""

    required: tuple[str, ...]
    optional: tuple[str, ...] = ()


@dataclass(frozen=True)
class Channel:
    kind: str
    # Send one message; raise SendFailed on failure, return on success.
    send: Sender
    # What a named destination of this kind holds; None: this kind takes no
    # named destination (email: the target is an address).
    named: NamedFields | None = None
    # How a target that is not a name resolves; None: every target is a name.
    resolve_target: TargetResolver | None = None


_CHANNELS: dict[str, Channel] = {}


def register(channel: Channel) -> Channel:
    _CHANNELS[channel.kind] = channel
    return channel


def channel_for(kind: str) -> Channel | None:
    return _CHANNELS.get(kind)


def kinds() -> list[str]:
    return sorted(_CHANNELS)


# --- what the HTTP channels share (webhook, teams, pagerduty) ------------------------


def is_retryable_status(status: int) -> bool:
    """408, 429 and 5xx are worth another attempt; any other 4xx is not."""
    return status in (408, 429) or status >= 500


def post_json(
    ctx: SendContext,
    url: str,
    body: bytes,
    *,
    redactor: Redactor,
    what: str,
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    """POST ``body`` (JSON bytes, sent as they are) to ``url`` within the delivery
    timeout; the response when its status is 2xx, else ``SendFailed``: 408, 429,
    5xx, a timeout or a connection error retryable (with ``Retry-After``), any
    other status not. ``what`` names the receiver in reasons; the URL never
    appears in one (``redactor`` knows the destination's secrets)."""
    timeout = ctx.settings.delivery_timeout_s
    try:
        response = ctx.http.post(
            url,
            content=body,
            headers={"Content-Type": "application/json", **(headers or {})},
            timeout=httpx.Timeout(timeout),
        )
    except httpx.TimeoutException:
        raise SendFailed(f"{what}: no answer within {timeout:g} s", retryable=True) from None
    except httpx.HTTPError as exc:
        # The exception's text may hold the URL: only its type and the redacted
        # text go out.
        reason = redactor.text(str(exc)).replace(url, "[REDACTED]")
        raise SendFailed(
            f"{what}: {type(exc).__name__}: {reason}".rstrip(": "), retryable=True
        ) from None
    if 200 <= response.status_code < 300:
        return response
    raise http_failure(response, redactor=redactor, what=what, now=ctx.clock())


def http_failure(
    response: httpx.Response, *, redactor: Redactor, what: str, now: datetime
) -> SendFailed:
    """The ``SendFailed`` of a non-2xx answer: its status and the start of its body
    (redacted), retryable for 408, 429 and 5xx, with ``Retry-After``."""
    status = response.status_code
    snippet = " ".join(response.text[:300].split())
    reason = f"{what} answered HTTP {status}"
    if snippet:
        reason += f": {redactor.text(snippet)}"
    retryable = is_retryable_status(status)
    retry_after = retry_after_seconds(response.headers.get("retry-after"), now)
    return SendFailed(reason, retryable=retryable, retry_after=retry_after if retryable else None)
