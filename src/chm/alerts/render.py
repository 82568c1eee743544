"""What a message says, for every channel: one text, then each platform's body.

A person reading any of them learns, per alert: the status (by word and,
in chat, an emoji: never by colour alone), the client, the pipeline, its
platform and environment, what happened (the summary), since when (UTC),
the latest run's error text (already redacted; cut to ``CHAT_ERROR_CHARS``
in chat channels) and the link to the pipeline (``AlertView.pipeline_url``).

The builders are pure: a ``Message`` in, a string or a JSON-ready dict out.
Each platform's documented shape is followed:
- Alertmanager webhook v4 (the monitoring contract, "Delivery");
- Slack Block Kit (``header``, ``section``, ``context`` blocks; at most 50
  blocks, a header's text at most 150 characters, a section's 3000) with a
  top-level ``text`` fallback (chat.postMessage, incoming webhooks);
- Microsoft Teams Workflows: a ``message`` with one Adaptive Card 1.4 attachment;
- PagerDuty Events API v2: one event per alert (``summary`` at most 1024
  characters; ``resolve`` carries only the routing key, action and dedup key);
- email: a subject, plain text and HTML (everything escaped).
"""

from __future__ import annotations

import html
import json
from datetime import datetime
from typing import Any

from chm.alerts.message import AlertView, Message
from chm.core.redaction import cap_text
from chm.core.timeutil import as_utc, isoformat_z

# The latest error as chat channels show it (Slack, Teams); email shows it whole.
CHAT_ERROR_CHARS = 500
# Alerts listed one by one in a chat message; the rest are counted.
CHAT_MAX_ALERTS = 20
SLACK_HEADER_CHARS = 150
SLACK_SECTION_CHARS = 3000
PAGERDUTY_SUMMARY_CHARS = 1024
# Alertmanager's endsAt while an alert fires (Go's zero time).
ZERO_TIME = "0001-01-01T00:00:00Z"

_WORDS = {"firing": "FIRING", "repeat": "STILL FIRING", "resolved": "RESOLVED"}
_SLACK_EMOJI = {"firing": ":red_circle:", "repeat": ":bell:", "resolved": ":white_check_mark:"}
_CARD_SYMBOL = {"firing": "🔴", "repeat": "🔔", "resolved": "✅"}


# --- the words ----------------------------------------------------------------------


def _event(alert: AlertView) -> str:
    """The alert's event as the message tells it: a resolved alert is resolved,
    whatever the delivery's event."""
    return "resolved" if alert.state == "resolved" else alert.event


def status_word(alert: AlertView) -> str:
    """FIRING, STILL FIRING (a repeat) or RESOLVED."""
    return _WORDS[_event(alert)]


def when(value: datetime) -> str:
    """A time as a person reads it: ``2024-05-01 10:00 UTC``."""
    return as_utc(value).strftime("%Y-%m-%d %H:%M UTC")


def where(alert: AlertView) -> str:
    return f"{alert.platform}/{alert.environment}"


def error_excerpt(alert: AlertView, limit: int | None) -> str | None:
    """The latest run's error text (already redacted), cut to ``limit`` characters."""
    if not alert.error_message:
        return None
    text = alert.error_message.strip()
    return cap_text(text, limit) if limit is not None else text


def title(message: Message) -> str:
    """One line: the only alert's status and summary, or what the group holds."""
    alerts = message.alerts
    if len(alerts) == 1:
        return f"{status_word(alerts[0])}: {alerts[0].summary}"
    counts: dict[str, int] = {}
    for alert in alerts:
        counts[status_word(alert)] = counts.get(status_word(alert), 0) + 1
    parts = ", ".join(f"{n} {word.lower()}" for word, n in counts.items())
    clients = sorted({a.client_name for a in alerts})
    whose = clients[0] if len(clients) == 1 else f"{len(clients)} clients"
    return f"{message.status.upper()}: {len(alerts)} alerts for {whose} ({parts})"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def subject(message: Message) -> str:
    """The email subject: ``[CHM] FIRING: orders_daily (Acme, airflow/prod) failed``."""
    return _one_line(f"[CHM] {title(message)}")[:250]


def alert_lines(alert: AlertView, error_limit: int | None) -> list[str]:
    lines = [
        f"{status_word(alert)}: {alert.summary}",
        f"Client: {alert.client_name}",
        f"Pipeline: {alert.pipeline_name} ({where(alert)})",
        f"Since: {when(alert.fired_at)}",
    ]
    if alert.resolved_at is not None:
        lines.append(f"Resolved: {when(alert.resolved_at)}")
    if alert.acknowledged_by:
        lines.append(f"Acknowledged by: {alert.acknowledged_by}")
    error = error_excerpt(alert, error_limit)
    if error:
        lines.append(f"Latest error: {error}")
    if alert.pipeline_url:
        lines.append(f"Link: {alert.pipeline_url}")
    return lines


def text(message: Message, error_limit: int | None = None) -> str:
    """The message as plain text: a title, then each alert's lines."""
    blocks = [title(message)]
    blocks.extend("\n".join(alert_lines(a, error_limit)) for a in message.alerts)
    return "\n\n".join(blocks) + "\n"


# --- email ----------------------------------------------------------------------------


def html_body(message: Message) -> str:
    """The message as HTML: every value escaped; status as a word."""
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8"></head><body>',
        f"<h1>{e(title(message))}</h1>",
    ]
    for alert in message.alerts:
        rows = [
            ("Status", e(status_word(alert))),
            ("Client", e(alert.client_name)),
            ("Pipeline", f"{e(alert.pipeline_name)} ({e(where(alert))})"),
            ("Since", e(when(alert.fired_at))),
        ]
        if alert.resolved_at is not None:
            rows.append(("Resolved", e(when(alert.resolved_at))))
        if alert.acknowledged_by:
            rows.append(("Acknowledged by", e(alert.acknowledged_by)))
        error = error_excerpt(alert, None)
        if error:
            rows.append(("Latest error", f"<pre>{e(error)}</pre>"))
        if alert.pipeline_url:
            url = e(alert.pipeline_url, quote=True)
            rows.append(("Link", f'<a href="{url}">{url}</a>'))
        parts.append(f"<h2>{e(status_word(alert))}: {e(alert.summary)}</h2>")
        parts.append("<table>")
        parts.extend(f"<tr><th align=left>{k}</th><td>{v}</td></tr>" for k, v in rows)
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# --- Slack Block Kit ---------------------------------------------------------------------


def slack_escape(value: str) -> str:
    """Slack's mrkdwn control characters (&, <, >) escaped, as Slack documents."""
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _slack_link(url: str, label: str) -> str:
    # A link's label may not hold "|" or ">" unescaped; the URL may not hold "|".
    return f"<{url.replace('|', '%7C')}|{slack_escape(label).replace('|', '¦')}>"


def _fit(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def slack_text(message: Message) -> str:
    """The top-level ``text``: the fallback for notifications and screen readers."""
    return _fit(title(message), 3000)


def slack_blocks(message: Message) -> list[dict[str, Any]]:
    """Block Kit: a header, then per alert a section (status by emoji and word,
    summary, since, latest error) and a context (client, pipeline, platform);
    past ``CHAT_MAX_ALERTS`` alerts, a context counting the others (50 blocks at most)."""
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": _fit(title(message), SLACK_HEADER_CHARS)},
        }
    ]
    for alert in message.alerts[:CHAT_MAX_ALERTS]:
        event = _event(alert)
        name = slack_escape(alert.pipeline_name)
        if alert.pipeline_url:
            name = _slack_link(alert.pipeline_url, alert.pipeline_name)
        lines = [
            f"{_SLACK_EMOJI[event]} *{status_word(alert)}*: {slack_escape(alert.summary)}",
            f"*Pipeline:* {name}   *Since:* {when(alert.fired_at)}",
        ]
        if alert.resolved_at is not None:
            lines.append(f"*Resolved:* {when(alert.resolved_at)}")
        if alert.acknowledged_by:
            lines.append(f"*Acknowledged by:* {slack_escape(alert.acknowledged_by)}")
        error = error_excerpt(alert, CHAT_ERROR_CHARS)
        if error:
            lines.append(f"*Latest error:*\n```{slack_escape(error)}```")
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": _fit("\n".join(lines), SLACK_SECTION_CHARS)},
            }
        )
        context = (
            f"Client: {alert.client_name} · Pipeline: {alert.pipeline_name} · "
            f"{where(alert)} · Rule {alert.rule_id} ({alert.rule_type})"
        )
        blocks.append(
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": _fit(slack_escape(context), 3000)}],
            }
        )
    hidden = len(message.alerts) - CHAT_MAX_ALERTS
    if hidden > 0:
        blocks.append(
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": f"… and {hidden} more alerts, not listed here"}
                ],
            }
        )
    return blocks


# --- Microsoft Teams (Workflows webhook, Adaptive Card) -------------------------------


def adaptive_card(message: Message) -> dict[str, Any]:
    """An Adaptive Card 1.4: a heading, then per alert its status (symbol and
    word), summary and a fact set; a button to the pipeline when there is one alert."""
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": title(message),
            "weight": "Bolder",
            "size": "Medium",
            "style": "heading",
            "wrap": True,
        }
    ]
    for alert in message.alerts[:CHAT_MAX_ALERTS]:
        facts = [
            {"title": "Status", "value": status_word(alert)},
            {"title": "Client", "value": alert.client_name},
            {"title": "Pipeline", "value": alert.pipeline_name},
            {"title": "Platform", "value": where(alert)},
            {"title": "Since", "value": when(alert.fired_at)},
        ]
        if alert.resolved_at is not None:
            facts.append({"title": "Resolved", "value": when(alert.resolved_at)})
        if alert.acknowledged_by:
            facts.append({"title": "Acknowledged by", "value": alert.acknowledged_by})
        items: list[dict[str, Any]] = [
            {
                "type": "TextBlock",
                "text": f"{_CARD_SYMBOL[_event(alert)]} {status_word(alert)}: {alert.summary}",
                "weight": "Bolder",
                "wrap": True,
            },
            {"type": "FactSet", "facts": facts},
        ]
        error = error_excerpt(alert, CHAT_ERROR_CHARS)
        if error:
            items.append(
                {
                    "type": "TextBlock",
                    "text": f"Latest error: {error}",
                    "wrap": True,
                    "fontType": "Monospace",
                }
            )
        if alert.pipeline_url:
            items.append(
                {
                    "type": "TextBlock",
                    "text": f"[Open {alert.pipeline_name}]({alert.pipeline_url})",
                    "wrap": True,
                }
            )
        body.append({"type": "Container", "separator": True, "items": items})
    hidden = len(message.alerts) - CHAT_MAX_ALERTS
    if hidden > 0:
        body.append(
            {
                "type": "TextBlock",
                "text": f"… and {hidden} more alerts, not listed here",
                "wrap": True,
            }
        )
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
        "msteams": {"width": "Full"},
    }
    only = message.alerts[0] if len(message.alerts) == 1 else None
    if only is not None and only.pipeline_url:
        card["actions"] = [
            {"type": "Action.OpenUrl", "title": "Open pipeline", "url": only.pipeline_url}
        ]
    return card


def teams_body(message: Message) -> dict[str, Any]:
    """What a Teams Workflows webhook takes: a ``message`` with one Adaptive Card attachment."""
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": adaptive_card(message),
            }
        ],
    }


# --- Alertmanager webhook v4 (the generic webhook) ---------------------------------------


def _labels(alert: AlertView) -> dict[str, str]:
    return {
        "alertname": f"chm_{alert.rule_type}",
        "client": alert.client_name,
        "pipeline": alert.pipeline_name,
        "platform": alert.platform,
        "environment": alert.environment,
        "rule_type": alert.rule_type,
    }


def _annotations(alert: AlertView) -> dict[str, str]:
    return {
        "summary": alert.summary,
        "client_id": str(alert.client_id),
        "pipeline_id": str(alert.pipeline_id),
        "rule_id": str(alert.rule_id),
        "run_id": "" if alert.run_id is None else str(alert.run_id),
    }


def _common(maps: list[dict[str, str]]) -> dict[str, str]:
    first, *rest = maps
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in rest)}


def _label_set(labels: dict[str, str]) -> str:
    # Alertmanager writes a label set as {name="value", ...}, values quoted.
    return (
        "{"
        + ",".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in sorted(labels.items()))
        + "}"
    )


def alertmanager_body(message: Message, receiver: str) -> dict[str, Any]:
    """The body of an Alertmanager webhook (version "4"), as the contract says.

    ``groupLabels`` is the client when every alert listed has the same one (the
    usual group: a client's pipelines failing together), else empty; ``groupKey``
    is built from the destination and those labels, so it stays the same for the
    retries of a message and for the firing and resolved messages of one group.
    """
    labels = [_labels(a) for a in message.alerts]
    common_labels = _common(labels)
    group_labels = {k: common_labels[k] for k in ("client",) if k in common_labels}
    alerts = [
        {
            "status": alert.state,
            "labels": labels[i],
            "annotations": _annotations(alert),
            "startsAt": isoformat_z(alert.fired_at),
            "endsAt": isoformat_z(alert.resolved_at)
            if alert.resolved_at is not None
            else ZERO_TIME,
            "generatorURL": alert.pipeline_url or "",
            "fingerprint": alert.fingerprint,
        }
        for i, alert in enumerate(message.alerts)
    ]
    route = _label_set({"destination": message.destination})
    return {
        "version": "4",
        "groupKey": f"{{}}/{route}:{_label_set(group_labels)}",
        "truncatedAlerts": 0,
        "status": message.status,
        "receiver": receiver,
        "groupLabels": group_labels,
        "commonLabels": common_labels,
        "commonAnnotations": _common([_annotations(a) for a in message.alerts]),
        "externalURL": message.public_url or "",
        "alerts": alerts,
    }


def json_bytes(body: Any) -> bytes:
    """A body as the bytes sent (and signed): compact JSON, UTF-8."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# --- PagerDuty Events API v2 -------------------------------------------------------------


def pagerduty_event(alert: AlertView, routing_key: str, public_url: str | None) -> dict[str, Any]:
    """One Events API v2 event: ``trigger`` for a firing alert (a repeat triggers
    again, which PagerDuty folds into the open alert of the same ``dedup_key``),
    ``resolve`` for a resolved one."""
    if alert.state == "resolved":
        return {
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": alert.fingerprint,
        }
    details: dict[str, Any] = {
        "client": alert.client_name,
        "client_id": str(alert.client_id),
        "pipeline": alert.pipeline_name,
        "pipeline_id": str(alert.pipeline_id),
        "platform": alert.platform,
        "environment": alert.environment,
        "rule_id": str(alert.rule_id),
        "rule_type": alert.rule_type,
        "run_id": None if alert.run_id is None else str(alert.run_id),
        "since": isoformat_z(alert.fired_at),
        "latest_error": error_excerpt(alert, None),
    }
    if alert.acknowledged_by:
        details["acknowledged_by"] = alert.acknowledged_by
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": alert.fingerprint,
        "payload": {
            "summary": _fit(alert.summary, PAGERDUTY_SUMMARY_CHARS),
            "source": f"{alert.client_name}/{alert.pipeline_name} ({where(alert)})",
            "severity": "error",
            "timestamp": isoformat_z(alert.fired_at),
            "component": alert.pipeline_name,
            "group": alert.client_name,
            "class": alert.rule_type,
            "custom_details": details,
        },
        "client": "CHM",
    }
    if public_url:
        event["client_url"] = public_url
    if alert.pipeline_url:
        event["links"] = [{"href": alert.pipeline_url, "text": f"{alert.pipeline_name} in CHM"}]
    return event
