"""Slack: a Block Kit message with a ``text`` fallback, through slack-sdk.

``slack:#channel`` posts with the bot token (``CHM_SLACK_BOT_TOKEN``) through
the Web API's ``chat.postMessage`` (``WebClient``, ``CHM_SLACK_API_URL``);
``slack:<name>`` posts to the named destination's incoming-webhook URL
(``url_env``; ``WebhookClient``). slack-sdk is Slack's own client: it speaks
both APIs as Slack documents them (the token as a bearer header, JSON
bodies) and reports each answer, which this module turns into the
delivery's outcome. Its own retries are turned off: the outbox retries.

Outcomes: ``ok: true`` (Web API) or HTTP 200 (incoming webhook) is sent.
``ratelimited`` / HTTP 429 is retried after Slack's ``Retry-After``; 5xx,
Slack's transient errors (``internal_error``, ``fatal_error``,
``service_unavailable``, ``request_timeout``), a timeout or a network error
are retried; anything else (``invalid_auth``, ``channel_not_found``,
``not_in_channel``, ``invalid_payload``, ``channel_is_archived``...) is final.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any
from urllib.error import URLError

from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web import SlackResponse, WebClient
from slack_sdk.webhook import WebhookClient, WebhookResponse

from chm.alerts import render
from chm.alerts.channels.base import (
    Channel,
    NamedFields,
    Resolved,
    SendContext,
    SendFailed,
    Undeliverable,
    is_retryable_status,
    register,
)
from chm.alerts.message import Message
from chm.core.redaction import Redactor
from chm.core.settings import Settings
from chm.core.timeutil import retry_after_seconds

# "#" and a channel's name (Slack: up to 80 characters, no spaces, commas or periods
# in new names; older names may hold them, so only blanks, "#" and "," are refused).
_CHANNEL = re.compile(r"^#[^\s#,]{1,80}$")
TRANSIENT_ERRORS = frozenset(
    {"internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)


def resolve_target(target: str, settings: Settings, environ: Mapping[str, str]) -> Resolved | None:
    """``#channel`` with the bot token; None for any other target (a name)."""
    if not target.startswith("#"):
        return None
    if not _CHANNEL.match(target):
        raise Undeliverable(
            "slack target starting with '#' is not a channel name (#name: up to 80 characters, "
            "no spaces)"
        )
    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else ""
    if not token:
        raise Undeliverable(
            f"slack:{target} posts with a bot token: CHM_SLACK_BOT_TOKEN is not set"
        )
    return Resolved(kind="slack", target=target, token=token)


def _timeout(ctx: SendContext) -> int:
    # slack-sdk takes whole seconds.
    return max(1, math.ceil(ctx.settings.delivery_timeout_s))


def _header(headers: Any, name: str) -> str | None:
    if not headers:
        return None
    for key, value in dict(headers).items():
        if str(key).lower() == name:
            return str(value[0] if isinstance(value, list) and value else value)
    return None


def send(message: Message, resolved: Resolved, ctx: SendContext) -> None:
    redactor = Redactor(resolved.secrets)
    text = render.slack_text(message)
    blocks = render.slack_blocks(message)
    try:
        if resolved.token:
            _post_message(message, resolved, ctx, text, blocks, redactor)
        elif resolved.url:
            _post_webhook(resolved, ctx, text, blocks, redactor)
        else:
            raise Undeliverable(f"slack destination {resolved.target!r} has no token nor URL")
    except (URLError, OSError) as exc:
        # A timeout, a refused connection, a reset: worth another attempt.
        reason = getattr(exc, "reason", None) or exc
        raise SendFailed(
            f"slack {resolved.target!r}: {type(exc).__name__}: {redactor.text(str(reason))}",
            retryable=True,
        ) from None


def _post_message(
    message: Message,
    resolved: Resolved,
    ctx: SendContext,
    text: str,
    blocks: list[dict[str, Any]],
    redactor: Redactor,
) -> None:
    client = WebClient(
        token=resolved.token,
        base_url=ctx.settings.slack_api_url,
        timeout=_timeout(ctx),
        retry_handlers=[],
    )
    try:
        client.chat_postMessage(
            channel=resolved.target,
            text=text,
            blocks=blocks,
            unfurl_links=False,
            unfurl_media=False,
        )
    except SlackApiError as exc:
        raise _api_failure(exc.response, resolved, ctx, redactor) from None
    except SlackClientError as exc:
        raise SendFailed(
            f"slack {resolved.target!r}: {redactor.text(str(exc))}", retryable=False
        ) from None


def _api_failure(
    response: SlackResponse, resolved: Resolved, ctx: SendContext, redactor: Redactor
) -> SendFailed:
    status = response.status_code
    data = response.data if isinstance(response.data, dict) else {}
    error = str(data.get("error") or "")
    retry_after = retry_after_seconds(_header(response.headers, "retry-after"), ctx.clock())
    rate_limited = status == 429 or error == "ratelimited"
    retryable = rate_limited or is_retryable_status(status) or error in TRANSIENT_ERRORS
    reason = f"slack chat.postMessage to {resolved.target} failed: HTTP {status}"
    if error:
        reason += f", error {redactor.text(error)!r}"
    return SendFailed(reason, retryable=retryable, retry_after=retry_after if retryable else None)


def _post_webhook(
    resolved: Resolved,
    ctx: SendContext,
    text: str,
    blocks: list[dict[str, Any]],
    redactor: Redactor,
) -> None:
    assert resolved.url is not None  # checked by send
    client = WebhookClient(resolved.url, timeout=_timeout(ctx), retry_handlers=[])
    try:
        response = client.send(text=text, blocks=blocks, unfurl_links=False, unfurl_media=False)
    except SlackClientError as exc:
        raise SendFailed(
            f"slack {resolved.target!r}: {redactor.text(str(exc))}", retryable=False
        ) from None
    if response.status_code == 200:
        return
    raise _webhook_failure(response, resolved, ctx, redactor)


def _webhook_failure(
    response: WebhookResponse, resolved: Resolved, ctx: SendContext, redactor: Redactor
) -> SendFailed:
    status = response.status_code
    retryable = is_retryable_status(status)
    retry_after = retry_after_seconds(_header(response.headers, "retry-after"), ctx.clock())
    reason = f"slack incoming webhook {resolved.target!r} answered HTTP {status}"
    body = " ".join((response.body or "")[:200].split())
    if body:
        reason += f": {redactor.text(body)}"
    return SendFailed(reason, retryable=retryable, retry_after=retry_after if retryable else None)


CHANNEL = register(
    Channel(
        kind="slack",
        send=send,
        named=NamedFields(required=("url_env",)),
        resolve_target=resolve_target,
    )
)
