"""The channel interface: one module per kind under ``chm.alerts.channels``,
each ending in ``register(Channel(...))`` (like ingestion's platforms)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import httpx

from chm.alerts.message import Message
from chm.core.settings import Settings


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
    url: str | None = None
    secret: str | None = None  # webhook HMAC key; for email, the SMTP password
    routing_key: str | None = None  # PagerDuty
    token: str | None = None  # Slack bot token
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def secrets(self) -> list[str]:
        return [v for v in (self.url, self.secret, self.routing_key, self.token) if v]


@dataclass
class SendContext:
    """What every send may use: the settings (SMTP, Slack's API, timeouts) and
    one HTTP client (httpx) shared by the worker's sends."""

    settings: Settings
    http: httpx.Client


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
