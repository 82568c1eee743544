"""PagerDuty: Events API v2, one event per alert of the message.

A named destination (``routing_key_env``: the integration key). Each alert
is one POST to ``CHM_PAGERDUTY_EVENTS_URL``: ``trigger`` while it fires (a
repeat triggers again: PagerDuty folds it into the open alert of the same
``dedup_key``), ``resolve`` once it resolved; ``dedup_key`` is the alert's
fingerprint, so a trigger and its resolve meet. PagerDuty answers 202 when
it accepted an event; 429 and 5xx (and a timeout, a network error) are worth
a retry, 400 is not (its documented "Response Codes & Retry Logic").

A message is sent when every event is accepted. When one fails, the retry
sends them all again: an accepted resolve or trigger sent twice changes
nothing in PagerDuty (same ``dedup_key``).
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
    if resolved.routing_key is None:
        raise Undeliverable(f"pagerduty destination {resolved.target!r} has no routing key")
    redactor = Redactor(resolved.secrets)
    for alert in message.alerts:
        event = render.pagerduty_event(alert, resolved.routing_key, message.public_url)
        post_json(
            ctx,
            ctx.settings.pagerduty_events_url,
            render.json_bytes(event),
            redactor=redactor,
            what=f"PagerDuty ({event['event_action']} of alert {alert.alert_id})",
        )


CHANNEL = register(
    Channel(kind="pagerduty", send=send, named=NamedFields(required=("routing_key_env",)))
)
