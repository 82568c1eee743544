"""The generic webhook: an Alertmanager webhook v4 body, signed (monitoring
contract, "Delivery").

A named destination (``url_env``, optional ``secret_env``). The raw body's
bytes are what is signed: ``X-CHM-Signature: sha256=<hex HMAC-SHA256(secret,
body)>``; ``X-CHM-Delivery`` (the message's key) is the same on every retry,
so a receiver drops a second copy. A 2xx answer is sent; 408, 429, 5xx, a
timeout or a connection error is retried (``Retry-After`` honoured); any
other answer is final.
"""

from __future__ import annotations

import hashlib
import hmac

from chm.alerts import render
from chm.alerts.channels.base import (
    Channel,
    NamedFields,
    Resolved,
    SendContext,
    Undeliverable,
    post_json,
    register,
)
from chm.alerts.message import Message
from chm.core.redaction import Redactor

SIGNATURE_HEADER = "X-CHM-Signature"
DELIVERY_HEADER = "X-CHM-Delivery"


def signature(secret: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of body keyed by secret>``, the header's value."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def send(message: Message, resolved: Resolved, ctx: SendContext) -> None:
    if resolved.url is None:
        raise Undeliverable(f"webhook destination {resolved.target!r} has no URL")
    body = render.json_bytes(render.alertmanager_body(message, resolved.name or resolved.target))
    headers = {DELIVERY_HEADER: message.key, "User-Agent": "CHM"}
    if resolved.secret:
        headers[SIGNATURE_HEADER] = signature(resolved.secret, body)
    post_json(
        ctx,
        resolved.url,
        body,
        redactor=Redactor(resolved.secrets),
        what=f"webhook {resolved.target!r}",
        headers=headers,
    )


CHANNEL = register(
    Channel(
        kind="webhook",
        send=send,
        named=NamedFields(required=("url_env",), optional=("secret_env",)),
    )
)
