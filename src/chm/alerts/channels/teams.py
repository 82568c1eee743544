"""Microsoft Teams: a Workflows webhook ("When a Teams webhook request is
received") posting an Adaptive Card to a channel or chat.

A named destination (``url_env``: the workflow's URL, which carries its own
signature and so is a secret). The body is a ``message`` with one
``application/vnd.microsoft.card.adaptive`` attachment (``render.teams_body``);
the retired Office 365 connectors and their MessageCard are not a target.
A 2xx answer (Workflows answers 202) is sent; 408, 429, 5xx, a timeout or a
connection error is retried; any other answer is final.
"""

from __future__ import annotations

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


def send(message: Message, resolved: Resolved, ctx: SendContext) -> None:
    if resolved.url is None:
        raise Undeliverable(f"teams destination {resolved.target!r} has no URL")
    post_json(
        ctx,
        resolved.url,
        render.json_bytes(render.teams_body(message)),
        redactor=Redactor(resolved.secrets),
        what=f"teams {resolved.target!r}",
    )


CHANNEL = register(Channel(kind="teams", send=send, named=NamedFields(required=("url_env",))))
