"""The five channels against real local servers that check each platform's
documented shapes (tests/alerts/channel_fakes.py): what is sent, what counts
as sent, what is retried (and after how long), what is final, and that no
failure reason ever holds a URL, key, token or password."""

from __future__ import annotations

import hashlib
import hmac
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from channel_fakes import (
    Answer,
    FakePagerDuty,
    FakeSlack,
    FakeTeams,
    Receiver,
    Request,
    SmtpServer,
    WebhookReceiver,
    alertmanager_problems,
    self_signed_certificate,
)
from pydantic import SecretStr

from chm.alerts import render
from chm.alerts.channels import Resolved, SendContext, SendFailed, channel_for, kinds
from chm.alerts.destinations import Destinations, parse_destinations, resolve
from chm.alerts.message import AlertView, Message
from chm.core.settings import Settings

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
FIRED = datetime(2024, 5, 1, 10, 0, 30, tzinfo=UTC)
PUBLIC = "https://chm.example.com"
WEBHOOK_SECRET = "whsec-0123456789abcdef"
SLACK_TOKEN = "xoxb-1111-2222-abcdefghijklmnop"
ROUTING_KEY = "R0UT1NGKEY0123456789abcdefABCDEF"  # 32 characters, as PagerDuty's
TEAMS_SIG = "s1gN4tur3-9f8e7d6c5b4a3210"
SMTP_PASSWORD = "smtp-pa55word-xyz"


def alert_view(alert_id: int = 1, **overrides: Any) -> AlertView:
    fields: dict[str, Any] = {
        "alert_id": alert_id,
        "rule_id": 7,
        "rule_type": "consecutive_failures",
        "fingerprint": f"{alert_id:032x}",
        "state": "firing",
        "event": "firing",
        "summary": f"orders_{alert_id} (Acme, airflow/prod) failed 3 times in a row",
        "client_id": 3,
        "client_name": "Acme",
        "pipeline_id": 100 + alert_id,
        "pipeline_name": f"orders_{alert_id}",
        "platform": "airflow",
        "environment": "prod",
        "fired_at": FIRED,
        "resolved_at": None,
        "run_id": 5000 + alert_id,
        "error_message": "Task failed: KeyError 'customer_id'",
        "pipeline_url": f"{PUBLIC}/pipelines/{100 + alert_id}",
    }
    fields.update(overrides)
    return AlertView(**fields)


def resolved_view(alert_id: int = 1, **overrides: Any) -> AlertView:
    return alert_view(
        alert_id,
        state="resolved",
        event="resolved",
        resolved_at=FIRED + timedelta(minutes=42),
        **overrides,
    )


def message(
    destination: str, *alerts: AlertView, key: str = "a" * 32, public_url: str | None = PUBLIC
) -> Message:
    kind, _, target = destination.partition(":")
    alerts = alerts or (alert_view(),)
    return Message(
        key=key,
        destination=destination,
        kind=kind,
        target=target,
        alerts=alerts,
        delivery_ids=tuple(range(1, len(alerts) + 1)),
        public_url=public_url,
    )


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client() as client:
        yield client


def context(http: httpx.Client, **settings: Any) -> SendContext:
    values: dict[str, Any] = {"delivery_timeout_s": 5.0, "public_url": PUBLIC, **settings}
    return SendContext(Settings(**values), http, clock=lambda: NOW)


def send(msg: Message, resolved: Resolved, ctx: SendContext) -> None:
    channel = channel_for(msg.kind)
    assert channel is not None
    channel.send(msg, resolved, ctx)


def failure(msg: Message, resolved: Resolved, ctx: SendContext) -> SendFailed:
    with pytest.raises(SendFailed) as caught:
        send(msg, resolved, ctx)
    return caught.value


def assert_no_secret(reason: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in reason, f"{secret!r} in {reason!r}"


def named(**entry: Any) -> Destinations:
    return parse_destinations([entry], "chm.toml")


def closed_port_url(path: str = "/") -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


def test_every_kind_is_registered_by_importing_the_package() -> None:
    assert kinds() == ["email", "pagerduty", "slack", "teams", "webhook"]


# --- webhook -------------------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(secret=WEBHOOK_SECRET) as server:
        yield server


def webhook_resolved(url: str, secret: str | None = WEBHOOK_SECRET) -> Resolved:
    entry: dict[str, Any] = {"name": "ops-webhook", "kind": "webhook", "url_env": "OPS_URL"}
    environ = {"OPS_URL": url}
    if secret is not None:
        entry["secret_env"] = "OPS_SECRET"
        environ["OPS_SECRET"] = secret
    return resolve("webhook:ops-webhook", named(**entry), Settings(), environ)


def test_webhook_posts_the_alertmanager_v4_body_signed_and_keyed(
    receiver: WebhookReceiver, http: httpx.Client
) -> None:
    msg = message("webhook:ops-webhook", alert_view(1), alert_view(2, run_id=None))
    send(msg, webhook_resolved(receiver.endpoint), context(http))

    assert receiver.problems == []
    (request,) = receiver.requests
    assert request.headers["x-chm-delivery"] == msg.key
    body = receiver.delivered[msg.key]
    assert body["version"] == "4"
    assert body["status"] == "firing"
    assert body["receiver"] == "ops-webhook"
    assert body["externalURL"] == PUBLIC
    assert body["truncatedAlerts"] == 0
    assert body["groupLabels"] == {"client": "Acme"}
    assert body["groupKey"] == '{}/{destination="webhook:ops-webhook"}:{client="Acme"}'
    assert body["commonLabels"] == {
        "client": "Acme",
        "platform": "airflow",
        "environment": "prod",
        "rule_type": "consecutive_failures",
        "alertname": "chm_consecutive_failures",
    }
    assert body["commonAnnotations"] == {"client_id": "3", "rule_id": "7"}
    first, second = body["alerts"]
    assert first == {
        "status": "firing",
        "labels": {
            "alertname": "chm_consecutive_failures",
            "client": "Acme",
            "pipeline": "orders_1",
            "platform": "airflow",
            "environment": "prod",
            "rule_type": "consecutive_failures",
        },
        "annotations": {
            "summary": "orders_1 (Acme, airflow/prod) failed 3 times in a row",
            "client_id": "3",
            "pipeline_id": "101",
            "rule_id": "7",
            "run_id": "5001",
        },
        "startsAt": "2024-05-01T10:00:30Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": f"{PUBLIC}/pipelines/101",
        "fingerprint": f"{1:032x}",
    }
    assert second["annotations"]["run_id"] == ""


def test_webhook_signature_is_the_hmac_of_the_raw_body(
    receiver: WebhookReceiver, http: httpx.Client
) -> None:
    msg = message("webhook:ops-webhook")
    send(msg, webhook_resolved(receiver.endpoint), context(http))

    (request,) = receiver.requests
    digest = hmac.new(WEBHOOK_SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    assert request.headers["x-chm-signature"] == f"sha256={digest}"
    assert request.body == render.json_bytes(render.alertmanager_body(msg, "ops-webhook"))


def test_webhook_signed_with_another_secret_is_refused_by_the_receiver_and_final(
    receiver: WebhookReceiver, http: httpx.Client
) -> None:
    failed = failure(
        message("webhook:ops-webhook"),
        webhook_resolved(receiver.endpoint, secret="not-the-receivers-secret"),
        context(http),
    )
    assert receiver.problems == ["signature"]
    assert failed.retryable is False
    assert "HTTP 401" in str(failed)
    assert_no_secret(str(failed), "not-the-receivers-secret", receiver.endpoint)


def test_webhook_without_a_secret_sends_no_signature(http: httpx.Client) -> None:
    with WebhookReceiver(secret=None) as server:
        send(message("webhook:ops-webhook"), webhook_resolved(server.endpoint, None), context(http))
        (request,) = server.requests
    assert "x-chm-signature" not in request.headers
    assert server.problems == []


def test_webhook_resolved_group_carries_each_end_and_keeps_the_group_key(
    receiver: WebhookReceiver, http: httpx.Client
) -> None:
    resolved = webhook_resolved(receiver.endpoint)
    send(message("webhook:ops-webhook", alert_view(1), key="1" * 32), resolved, context(http))
    send(message("webhook:ops-webhook", resolved_view(1), key="2" * 32), resolved, context(http))

    assert receiver.problems == []
    fired, ended = receiver.delivered["1" * 32], receiver.delivered["2" * 32]
    assert ended["status"] == "resolved"
    assert ended["alerts"][0]["status"] == "resolved"
    assert ended["alerts"][0]["endsAt"] == "2024-05-01T10:42:30Z"
    assert ended["alerts"][0]["fingerprint"] == fired["alerts"][0]["fingerprint"]
    assert ended["groupKey"] == fired["groupKey"]


def test_webhook_group_of_two_clients_has_no_group_label_and_its_own_key(
    receiver: WebhookReceiver, http: httpx.Client
) -> None:
    msg = message("webhook:ops-webhook", alert_view(1), alert_view(2, client_name="Globex"))
    send(msg, webhook_resolved(receiver.endpoint), context(http))
    body = receiver.delivered[msg.key]
    assert body["groupLabels"] == {}
    assert body["groupKey"] == '{}/{destination="webhook:ops-webhook"}:{}'
    assert "client" not in body["commonLabels"]


def test_a_group_with_a_firing_alert_fires_and_lists_the_resolved_one_too(
    receiver: WebhookReceiver, http: httpx.Client
) -> None:
    msg = message("webhook:ops-webhook", alert_view(1), resolved_view(2))
    send(msg, webhook_resolved(receiver.endpoint), context(http))
    body = receiver.delivered[msg.key]
    assert body["status"] == "firing"
    assert [a["status"] for a in body["alerts"]] == ["firing", "resolved"]


def test_webhook_without_public_url_links_nothing(
    receiver: WebhookReceiver, http: httpx.Client
) -> None:
    msg = message("webhook:ops-webhook", alert_view(1, pipeline_url=None), public_url=None)
    send(msg, webhook_resolved(receiver.endpoint), context(http))
    body = receiver.delivered[msg.key]
    assert receiver.problems == []
    assert body["externalURL"] == ""
    assert body["alerts"][0]["generatorURL"] == ""


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_webhook_408_429_and_5xx_are_retryable_with_retry_after_seconds(
    receiver: WebhookReceiver, http: httpx.Client, status: int
) -> None:
    receiver.script(receiver.PATH, Answer(status, "try later", {"Retry-After": "7"}))
    failed = failure(
        message("webhook:ops-webhook"), webhook_resolved(receiver.endpoint), context(http)
    )
    assert failed.retryable is True
    assert failed.retry_after == 7.0
    assert f"HTTP {status}" in str(failed)


def test_webhook_retry_after_as_an_http_date_is_read_against_the_clock(
    receiver: WebhookReceiver, http: httpx.Client
) -> None:
    later = format_datetime(NOW + timedelta(seconds=120), usegmt=True)
    receiver.script(receiver.PATH, Answer(503, "", {"Retry-After": later}))
    failed = failure(
        message("webhook:ops-webhook"), webhook_resolved(receiver.endpoint), context(http)
    )
    assert failed.retryable is True
    assert failed.retry_after == 120.0


def test_webhook_retryable_answer_without_retry_after_leaves_the_wait_to_the_backoff(
    receiver: WebhookReceiver, http: httpx.Client
) -> None:
    receiver.script(receiver.PATH, Answer(500, "boom"))
    failed = failure(
        message("webhook:ops-webhook"), webhook_resolved(receiver.endpoint), context(http)
    )
    assert (failed.retryable, failed.retry_after) == (True, None)


@pytest.mark.parametrize("status", [301, 400, 403, 404, 410, 422])
def test_webhook_other_answers_are_final(
    receiver: WebhookReceiver, http: httpx.Client, status: int
) -> None:
    receiver.script(receiver.PATH, Answer(status, "no", {"Retry-After": "7"}))
    failed = failure(
        message("webhook:ops-webhook"), webhook_resolved(receiver.endpoint), context(http)
    )
    assert failed.retryable is False
    assert failed.retry_after is None


def test_webhook_500_then_200_is_sent_on_the_second_attempt_with_the_same_key(
    receiver: WebhookReceiver, http: httpx.Client
) -> None:
    receiver.script(receiver.PATH, Answer(500, "boom"))
    msg = message("webhook:ops-webhook")
    resolved = webhook_resolved(receiver.endpoint)
    assert failure(msg, resolved, context(http)).retryable
    send(msg, resolved, context(http))
    send(msg, resolved, context(http))  # a retry after a lost answer

    assert [r.headers["x-chm-delivery"] for r in receiver.requests] == [msg.key] * 3
    assert list(receiver.delivered) == [msg.key]
    assert receiver.duplicates == 1


def test_webhook_timeout_is_retryable(receiver: WebhookReceiver, http: httpx.Client) -> None:
    receiver.script(receiver.PATH, Answer(200, "", delay=1.0))
    failed = failure(
        message("webhook:ops-webhook"),
        webhook_resolved(receiver.endpoint),
        context(http, delivery_timeout_s=0.2),
    )
    assert failed.retryable is True
    assert "no answer within 0.2 s" in str(failed)


def test_webhook_connection_refused_is_retryable_and_names_no_url(http: httpx.Client) -> None:
    url = closed_port_url("/hooks/T0KEN-in-the-path-0123456789")
    failed = failure(message("webhook:ops-webhook"), webhook_resolved(url), context(http))
    assert failed.retryable is True
    assert_no_secret(str(failed), url, "T0KEN-in-the-path-0123456789")


def test_webhook_failure_never_shows_the_url_token_or_secret_even_when_echoed(
    http: httpx.Client,
) -> None:
    path = "/hooks/T0KEN-in-the-path-0123456789"

    def echo(request: Request) -> Answer:
        return Answer(
            500,
            f"cannot deliver to {request.path}?{request.headers.get('x-chm-signature')} "
            f"(key {request.query.get('key')})",
        )

    with Receiver() as server:
        server.routes[path] = echo
        url = f"{server.url}{path}?key=query-secret-0123456789"
        failed = failure(message("webhook:ops-webhook"), webhook_resolved(url), context(http))
    reason = str(failed)
    assert "HTTP 500" in reason
    assert "[REDACTED]" in reason
    assert_no_secret(reason, url, "T0KEN-in-the-path-0123456789", "query-secret-0123456789")
    assert_no_secret(reason, WEBHOOK_SECRET)


# --- Slack ------------------------------------------------------------------------------------


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack(SLACK_TOKEN, channels=("#ops",)) as server:
        yield server


def slack_settings(slack: FakeSlack, token: str = SLACK_TOKEN) -> dict[str, Any]:
    return {"slack_bot_token": SecretStr(token), "slack_api_url": slack.api_url}


def slack_bot(slack: FakeSlack, target: str = "#ops", token: str = SLACK_TOKEN) -> Resolved:
    return resolve(f"slack:{target}", None, Settings(**slack_settings(slack, token)), {})


def slack_hook(url: str) -> Resolved:
    dests = named(name="ops-slack", kind="slack", url_env="SLACK_HOOK")
    return resolve("slack:ops-slack", dests, Settings(), {"SLACK_HOOK": url})


def test_slack_channel_posts_block_kit_with_the_bot_token(
    slack: FakeSlack, http: httpx.Client
) -> None:
    msg = message("slack:#ops", alert_view(1))
    send(msg, slack_bot(slack), context(http, **slack_settings(slack)))

    assert slack.problems == []
    (request,) = slack.requests
    assert request.path == "/api/chat.postMessage"
    assert request.headers["authorization"] == f"Bearer {SLACK_TOKEN}"
    (posted,) = slack.posted
    assert posted["channel"] == "#ops"
    assert posted["text"] == "FIRING: orders_1 (Acme, airflow/prod) failed 3 times in a row"
    assert posted["unfurl_links"] is False
    header, section, context_block = posted["blocks"]
    assert header["type"] == "header"
    section_text = section["text"]["text"]
    # Status by emoji and word, not by colour.
    assert section_text.startswith(":red_circle: *FIRING*: orders_1 (Acme, airflow/prod)")
    assert f"<{PUBLIC}/pipelines/101|orders_1>" in section_text
    assert "2024-05-01 10:00 UTC" in section_text
    assert "Task failed: KeyError 'customer_id'" in section_text
    assert "Client: Acme" in context_block["elements"][0]["text"]


def test_slack_named_destination_posts_to_its_incoming_webhook(
    slack: FakeSlack, http: httpx.Client
) -> None:
    msg = message("slack:ops-slack", resolved_view(1))
    send(msg, slack_hook(slack.webhook_url), context(http))

    assert slack.problems == []
    (request,) = slack.requests
    assert request.path == FakeSlack.WEBHOOK
    assert "authorization" not in request.headers
    (posted,) = slack.posted
    assert posted["text"].startswith("RESOLVED: orders_1")
    assert posted["blocks"][1]["text"]["text"].startswith(":white_check_mark: *RESOLVED*")


def test_slack_escapes_mrkdwn_and_cuts_long_texts_within_block_kit_limits(
    slack: FakeSlack, http: httpx.Client
) -> None:
    alerts = [
        alert_view(
            i,
            summary="<!channel> & " + "x" * 400,
            error_message="E" * 5000,
            event="repeat" if i % 2 else "firing",
        )
        for i in range(1, 31)
    ]
    send(message("slack:#ops", *alerts), slack_bot(slack), context(http, **slack_settings(slack)))

    assert slack.problems == []
    (posted,) = slack.posted
    blocks = posted["blocks"]
    assert len(blocks) <= 50
    assert len(blocks[0]["text"]["text"]) <= 150
    assert "&lt;!channel&gt; &amp;" in blocks[1]["text"]["text"]
    assert "<!channel>" not in str(blocks)
    assert ":bell: *STILL FIRING*" in blocks[1]["text"]["text"]
    assert "E" * 501 not in str(blocks)  # the error cut to about 500 characters
    assert blocks[-1]["elements"][0]["text"] == "… and 10 more alerts, not listed here"


def test_slack_ratelimited_is_retryable_after_slacks_retry_after(
    slack: FakeSlack, http: httpx.Client
) -> None:
    slack.script(
        FakeSlack.API, Answer(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "30"})
    )
    failed = failure(
        message("slack:#ops"), slack_bot(slack), context(http, **slack_settings(slack))
    )
    assert (failed.retryable, failed.retry_after) == (True, 30.0)
    assert "ratelimited" in str(failed)


def test_slack_incoming_webhook_429_is_retryable_after_retry_after(
    slack: FakeSlack, http: httpx.Client
) -> None:
    slack.script(FakeSlack.WEBHOOK, Answer(429, "rate_limited", {"Retry-After": "12"}))
    failed = failure(message("slack:ops-slack"), slack_hook(slack.webhook_url), context(http))
    assert (failed.retryable, failed.retry_after) == (True, 12.0)


@pytest.mark.parametrize(
    ("target", "token", "error"),
    [
        ("#ops", "xoxb-wrong-token-0000", "invalid_auth"),
        ("#nowhere", SLACK_TOKEN, "channel_not_found"),
    ],
)
def test_slack_invalid_auth_and_unknown_channel_are_final(
    slack: FakeSlack, http: httpx.Client, target: str, token: str, error: str
) -> None:
    failed = failure(
        message(f"slack:{target}"),
        slack_bot(slack, target, token),
        context(http, **slack_settings(slack, token)),
    )
    assert failed.retryable is False
    assert error in str(failed)
    assert_no_secret(str(failed), token)


def test_slack_server_errors_are_retryable(slack: FakeSlack, http: httpx.Client) -> None:
    slack.script(FakeSlack.API, Answer(503, "upstream down"))
    slack.script(FakeSlack.WEBHOOK, Answer(500, "rollup_error"))
    api = failure(message("slack:#ops"), slack_bot(slack), context(http, **slack_settings(slack)))
    hook = failure(message("slack:ops-slack"), slack_hook(slack.webhook_url), context(http))
    assert api.retryable and hook.retryable
    assert "rollup_error" in str(hook)


def test_slack_transient_api_error_with_http_200_is_retryable(
    slack: FakeSlack, http: httpx.Client
) -> None:
    slack.script(FakeSlack.API, Answer(200, {"ok": False, "error": "internal_error"}))
    failed = failure(
        message("slack:#ops"), slack_bot(slack), context(http, **slack_settings(slack))
    )
    assert failed.retryable is True


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, "invalid_payload"),
        (403, "action_prohibited"),
        (404, "channel_not_found"),
        (410, "channel_is_archived"),
    ],
)
def test_slack_incoming_webhook_errors_are_final(
    slack: FakeSlack, http: httpx.Client, status: int, body: str
) -> None:
    slack.script(FakeSlack.WEBHOOK, Answer(status, body))
    failed = failure(message("slack:ops-slack"), slack_hook(slack.webhook_url), context(http))
    assert failed.retryable is False
    assert body in str(failed)
    assert_no_secret(str(failed), slack.webhook_url, "XXXXXXXXXXXXXXXXXXXXXXXX")


def test_slack_failures_never_show_the_token_or_the_webhook_url(
    slack: FakeSlack, http: httpx.Client
) -> None:
    slack.script(FakeSlack.WEBHOOK, Answer(500, f"failed {slack.webhook_url} {FakeSlack.WEBHOOK}"))
    slack.script(FakeSlack.API, Answer(200, {"ok": False, "error": f"bad {SLACK_TOKEN}"}))
    hook = failure(message("slack:ops-slack"), slack_hook(slack.webhook_url), context(http))
    api = failure(message("slack:#ops"), slack_bot(slack), context(http, **slack_settings(slack)))
    assert_no_secret(str(hook), slack.webhook_url, "XXXXXXXXXXXXXXXXXXXXXXXX")
    assert_no_secret(str(api), SLACK_TOKEN)


def test_slack_unreachable_is_retryable(http: httpx.Client) -> None:
    url = closed_port_url("/services/T0000/B0000/ZZZZZZZZZZZZZZZZZZZZZZZZ")
    hook = failure(message("slack:ops-slack"), slack_hook(url), context(http))
    assert hook.retryable is True
    assert_no_secret(str(hook), url, "ZZZZZZZZZZZZZZZZZZZZZZZZ")
    api_settings = {
        "slack_bot_token": SecretStr(SLACK_TOKEN),
        "slack_api_url": closed_port_url("/api/"),
    }
    bot = resolve("slack:#ops", None, Settings(**api_settings), {})
    api = failure(message("slack:#ops"), bot, context(http, **api_settings))
    assert api.retryable is True


# --- Teams --------------------------------------------------------------------------------------


@pytest.fixture
def teams() -> Iterator[FakeTeams]:
    with FakeTeams(TEAMS_SIG) as server:
        yield server


def teams_resolved(url: str) -> Resolved:
    dests = named(name="ops-teams", kind="teams", url_env="TEAMS_URL")
    return resolve("teams:ops-teams", dests, Settings(), {"TEAMS_URL": url})


def test_teams_posts_a_message_with_one_adaptive_card(teams: FakeTeams, http: httpx.Client) -> None:
    send(
        message("teams:ops-teams", alert_view(1)), teams_resolved(teams.workflow_url), context(http)
    )

    assert teams.problems == []
    (request,) = teams.requests
    body = request.json()
    assert body["type"] == "message"
    (attachment,) = body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert attachment["contentUrl"] is None
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard"
    assert card["version"] == "1.4"
    assert card["body"][0]["text"].startswith("FIRING: orders_1")
    container = card["body"][1]
    assert container["items"][0]["text"].startswith("🔴 FIRING: orders_1")
    facts = {f["title"]: f["value"] for f in container["items"][1]["facts"]}
    assert facts == {
        "Status": "FIRING",
        "Client": "Acme",
        "Pipeline": "orders_1",
        "Platform": "airflow/prod",
        "Since": "2024-05-01 10:00 UTC",
    }
    assert card["actions"] == [
        {"type": "Action.OpenUrl", "title": "Open pipeline", "url": f"{PUBLIC}/pipelines/101"}
    ]


def test_teams_group_lists_each_alert_with_its_status_word(
    teams: FakeTeams, http: httpx.Client
) -> None:
    msg = message("teams:ops-teams", alert_view(1), resolved_view(2, acknowledged_by="ana"))
    send(msg, teams_resolved(teams.workflow_url), context(http))
    assert teams.problems == []
    card = teams.cards[0]
    assert card["body"][0]["text"] == "FIRING: 2 alerts for Acme (1 firing, 1 resolved)"
    assert card["body"][2]["items"][0]["text"].startswith("✅ RESOLVED: orders_2")
    facts = {f["title"]: f["value"] for f in card["body"][2]["items"][1]["facts"]}
    assert facts["Resolved"] == "2024-05-01 10:42 UTC"
    assert facts["Acknowledged by"] == "ana"
    assert "actions" not in card


@pytest.mark.parametrize(
    ("status", "retryable", "retry_after"),
    [(400, False, None), (429, True, 60.0), (502, True, 60.0)],
)
def test_teams_answers(
    teams: FakeTeams, http: httpx.Client, status: int, retryable: bool, retry_after: float | None
) -> None:
    teams.script(
        teams.PATH,
        Answer(status, {"error": {"message": f"sig={TEAMS_SIG}"}}, {"Retry-After": "60"}),
    )
    failed = failure(message("teams:ops-teams"), teams_resolved(teams.workflow_url), context(http))
    assert (failed.retryable, failed.retry_after) == (retryable, retry_after)
    assert_no_secret(str(failed), TEAMS_SIG, teams.workflow_url)


# --- PagerDuty -------------------------------------------------------------------------------------


@pytest.fixture
def pagerduty() -> Iterator[FakePagerDuty]:
    with FakePagerDuty() as server:
        yield server


def pagerduty_resolved(routing_key: str = ROUTING_KEY) -> Resolved:
    dests = named(name="ops-pd", kind="pagerduty", routing_key_env="PD_KEY")
    return resolve("pagerduty:ops-pd", dests, Settings(), {"PD_KEY": routing_key})


def test_pagerduty_triggers_one_event_per_alert_keyed_by_fingerprint(
    pagerduty: FakePagerDuty, http: httpx.Client
) -> None:
    msg = message("pagerduty:ops-pd", alert_view(1), alert_view(2, summary="s" * 2000))
    send(msg, pagerduty_resolved(), context(http, pagerduty_events_url=pagerduty.events_url))

    assert pagerduty.problems == []
    first, second = pagerduty.events
    assert first == {
        "routing_key": ROUTING_KEY,
        "event_action": "trigger",
        "dedup_key": f"{1:032x}",
        "payload": {
            "summary": "orders_1 (Acme, airflow/prod) failed 3 times in a row",
            "source": "Acme/orders_1 (airflow/prod)",
            "severity": "error",
            "timestamp": "2024-05-01T10:00:30Z",
            "component": "orders_1",
            "group": "Acme",
            "class": "consecutive_failures",
            "custom_details": {
                "client": "Acme",
                "client_id": "3",
                "pipeline": "orders_1",
                "pipeline_id": "101",
                "platform": "airflow",
                "environment": "prod",
                "rule_id": "7",
                "rule_type": "consecutive_failures",
                "run_id": "5001",
                "since": "2024-05-01T10:00:30Z",
                "latest_error": "Task failed: KeyError 'customer_id'",
            },
        },
        "client": "CHM",
        "client_url": PUBLIC,
        "links": [{"href": f"{PUBLIC}/pipelines/101", "text": "orders_1 in CHM"}],
    }
    assert len(second["payload"]["summary"]) == 1024
    assert pagerduty.alerts == {f"{1:032x}": "triggered", f"{2:032x}": "triggered"}


def test_pagerduty_resolve_carries_only_the_key_action_and_dedup_key(
    pagerduty: FakePagerDuty, http: httpx.Client
) -> None:
    ctx = context(http, pagerduty_events_url=pagerduty.events_url)
    send(message("pagerduty:ops-pd", alert_view(1), key="1" * 32), pagerduty_resolved(), ctx)
    send(message("pagerduty:ops-pd", resolved_view(1), key="2" * 32), pagerduty_resolved(), ctx)

    assert pagerduty.problems == []
    assert pagerduty.events[1] == {
        "routing_key": ROUTING_KEY,
        "event_action": "resolve",
        "dedup_key": f"{1:032x}",
    }
    assert pagerduty.alerts == {f"{1:032x}": "resolved"}


def test_pagerduty_repeat_triggers_the_same_dedup_key_again(
    pagerduty: FakePagerDuty, http: httpx.Client
) -> None:
    ctx = context(http, pagerduty_events_url=pagerduty.events_url)
    send(message("pagerduty:ops-pd", alert_view(1), key="1" * 32), pagerduty_resolved(), ctx)
    send(
        message("pagerduty:ops-pd", alert_view(1, event="repeat"), key="2" * 32),
        pagerduty_resolved(),
        ctx,
    )
    assert [e["event_action"] for e in pagerduty.events] == ["trigger", "trigger"]
    assert {e["dedup_key"] for e in pagerduty.events} == {f"{1:032x}"}
    assert pagerduty.alerts == {f"{1:032x}": "triggered"}


def test_pagerduty_400_is_final_and_never_shows_the_routing_key(
    pagerduty: FakePagerDuty, http: httpx.Client
) -> None:
    short_key = "shortkey-not-32-characters"
    failed = failure(
        message("pagerduty:ops-pd"),
        pagerduty_resolved(short_key),
        context(http, pagerduty_events_url=pagerduty.events_url),
    )
    assert pagerduty.problems == ["Length of 'routing_key' is incorrect (should be 32 characters)"]
    assert failed.retryable is False
    assert "HTTP 400" in str(failed) and "invalid event" in str(failed)

    pagerduty.script(pagerduty.PATH, Answer(400, {"errors": [f"unknown key {ROUTING_KEY}"]}))
    echoed = failure(
        message("pagerduty:ops-pd"),
        pagerduty_resolved(),
        context(http, pagerduty_events_url=pagerduty.events_url),
    )
    assert_no_secret(str(echoed), ROUTING_KEY, short_key)


@pytest.mark.parametrize("status", [429, 500, 503])
def test_pagerduty_429_and_5xx_are_retryable(
    pagerduty: FakePagerDuty, http: httpx.Client, status: int
) -> None:
    pagerduty.script(pagerduty.PATH, Answer(status, {"status": "throttled"}, {"Retry-After": "45"}))
    failed = failure(
        message("pagerduty:ops-pd"),
        pagerduty_resolved(),
        context(http, pagerduty_events_url=pagerduty.events_url),
    )
    assert (failed.retryable, failed.retry_after) == (True, 45.0)


def test_pagerduty_failure_after_a_first_accepted_event_sends_both_again_on_retry(
    pagerduty: FakePagerDuty, http: httpx.Client
) -> None:
    ctx = context(http, pagerduty_events_url=pagerduty.events_url)
    msg = message("pagerduty:ops-pd", alert_view(1), resolved_view(2))
    pagerduty.script(pagerduty.PATH, Answer(202, {"status": "success"}), Answer(503, ""))
    assert failure(msg, pagerduty_resolved(), ctx).retryable
    send(msg, pagerduty_resolved(), ctx)
    assert len(pagerduty.requests) == 4
    assert pagerduty.alerts == {f"{1:032x}": "triggered"}  # a resolve of an unknown key is dropped


# --- email ---------------------------------------------------------------------------------------


def email_settings(
    server: SmtpServer, scheme: str = "smtp", user: str | None = None, **more: Any
) -> Settings:
    return Settings(
        smtp_url=SecretStr(server.url(scheme, user)),
        smtp_from="chm@example.com",
        delivery_timeout_s=5.0,
        **more,
    )


def email_send(msg: Message, settings: Settings, http: httpx.Client) -> None:
    resolved = resolve(msg.destination, None, settings, {})
    send(msg, resolved, SendContext(settings, http, clock=lambda: NOW))


def email_failure(msg: Message, settings: Settings, http: httpx.Client) -> SendFailed:
    with pytest.raises(SendFailed) as caught:
        email_send(msg, settings, http)
    return caught.value


def test_email_sends_text_and_html_alternatives(http: httpx.Client) -> None:
    msg = message(
        "email:ops@example.com",
        alert_view(
            1, summary="orders_1 <script>alert(1)</script> failed", error_message="a < b & c"
        ),
    )
    with SmtpServer() as server:
        email_send(msg, email_settings(server), http)
    (received,) = server.received
    assert received.mail_from == "chm@example.com"
    assert received.rcpt_tos == ["ops@example.com"]
    mail = received.message
    assert mail["Subject"] == "[CHM] FIRING: orders_1 <script>alert(1)</script> failed"
    assert mail["From"] == "chm@example.com"
    assert mail["To"] == "ops@example.com"
    assert mail["Message-ID"] == f"<chm.{msg.key}@example.com>"
    assert mail["X-CHM-Delivery"] == msg.key
    assert mail["Auto-Submitted"] == "auto-generated"
    assert mail.get_content_type() == "multipart/alternative"
    plain = mail.get_body(("plain",))
    rich = mail.get_body(("html",))
    assert plain is not None and rich is not None
    text, page = plain.get_content(), rich.get_content()
    assert "Client: Acme" in text
    assert "Since: 2024-05-01 10:00 UTC" in text
    assert "Latest error: a < b & c" in text
    assert f"Link: {PUBLIC}/pipelines/101" in text
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "a &lt; b &amp; c" in page
    assert f'<a href="{PUBLIC}/pipelines/101">' in page


def test_email_retry_carries_the_same_message_id(http: httpx.Client) -> None:
    msg = message("email:ops@example.com", alert_view(1), resolved_view(2))
    with SmtpServer() as server:
        email_send(msg, email_settings(server), http)
        email_send(msg, email_settings(server), http)
    first, second = (r.message for r in server.received)
    assert first["Message-ID"] == second["Message-ID"] == f"<chm.{msg.key}@example.com>"
    assert first["Subject"] == "[CHM] FIRING: 2 alerts for Acme (1 firing, 1 resolved)"


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_email_logs_in_with_the_user_of_the_url_and_the_password_on_a_local_server(
    http: httpx.Client,
) -> None:
    with SmtpServer(login=("chm-mailer", SMTP_PASSWORD)) as server:
        settings = email_settings(server, user="chm-mailer", smtp_password=SecretStr(SMTP_PASSWORD))
        email_send(message("email:ops@example.com"), settings, http)
    assert server.logins == ["chm-mailer"]
    assert len(server.received) == 1


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_email_wrong_password_is_final_and_never_shown(http: httpx.Client) -> None:
    with SmtpServer(login=("chm-mailer", SMTP_PASSWORD)) as server:
        settings = email_settings(
            server, user="chm-mailer", smtp_password=SecretStr("wrong-pa55word-abc")
        )
        failed = email_failure(message("email:ops@example.com"), settings, http)
    assert failed.retryable is False
    assert "535" in str(failed)
    assert_no_secret(str(failed), "wrong-pa55word-abc", SMTP_PASSWORD)
    assert server.received == []


@pytest.mark.parametrize(("code", "retryable"), [(450, True), (550, False)])
def test_email_refused_recipient_retry_depends_on_the_code(
    http: httpx.Client, code: int, retryable: bool
) -> None:
    with SmtpServer(refuse={"ops@example.com": code}) as server:
        failed = email_failure(message("email:ops@example.com"), email_settings(server), http)
    assert failed.retryable is retryable
    assert str(code) in str(failed)


def test_email_unreachable_server_is_retryable(http: httpx.Client) -> None:
    port = int(closed_port_url().rsplit(":", 1)[1].rstrip("/"))
    settings = Settings(smtp_url=SecretStr(f"smtp://127.0.0.1:{port}"), smtp_from="chm@example.com")
    failed = email_failure(message("email:ops@example.com"), settings, http)
    assert failed.retryable is True


class QuitBadlyServer:
    """A minimal SMTP server on 127.0.0.1 that accepts the mail, then ends the
    session badly: ``quit`` is its answer to QUIT, ``"close"`` closes the
    connection instead, ``"silent"`` answers nothing until the client leaves."""

    def __init__(self, quit: str) -> None:
        self.quit = quit
        self.accepted = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with self.listener:
            conn, _ = self.listener.accept()
        with conn, conn.makefile("rb") as lines:
            conn.sendall(b"220 fake ESMTP\r\n")
            for line in lines:
                verb = line[:4].upper()
                if verb == b"DATA":
                    conn.sendall(b"354 go ahead\r\n")
                    while lines.readline() not in (b".\r\n", b""):
                        pass
                    self.accepted += 1
                    conn.sendall(b"250 2.0.0 queued as 1\r\n")
                elif verb == b"QUIT":
                    if self.quit == "close":
                        return
                    if self.quit != "silent":
                        conn.sendall(self.quit.encode() + b"\r\n")
                else:  # EHLO, MAIL, RCPT
                    conn.sendall(b"250 ok\r\n")

    def __enter__(self) -> QuitBadlyServer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.thread.join(5)


@pytest.mark.parametrize(
    "quit", ["421 4.3.2 shutting down", "500 5.5.1 command unrecognized", "close", "silent"]
)
def test_email_accepted_by_the_server_is_sent_whatever_quit_answers(
    http: httpx.Client, quit: str
) -> None:
    # Once the server accepted the mail, a failure to end the session must not
    # make the send fail: a retry would send the mail again.
    with QuitBadlyServer(quit) as server:
        settings = Settings(
            smtp_url=SecretStr(f"smtp://127.0.0.1:{server.port}"),
            smtp_from="chm@example.com",
            delivery_timeout_s=1.0,
        )
        email_send(message("email:ops@example.com"), settings, http)
    assert server.accepted == 1


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    made = self_signed_certificate(tmp_path_factory.mktemp("tls"))
    if made is None:
        pytest.skip("openssl is needed to make a test certificate")
    return made


def test_email_upgrades_with_starttls_before_logging_in(
    http: httpx.Client, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    with SmtpServer(tls=certificate, login=("chm-mailer", SMTP_PASSWORD)) as server:
        settings = email_settings(server, user="chm-mailer", smtp_password=SecretStr(SMTP_PASSWORD))
        email_send(message("email:ops@example.com"), settings, http)
    # The server refuses AUTH before STARTTLS (auth_require_tls): the login proves the upgrade.
    assert server.logins == ["chm-mailer"]
    assert len(server.received) == 1


def test_email_over_smtps_speaks_tls_from_the_first_byte(
    http: httpx.Client, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    with SmtpServer(tls=certificate, implicit_tls=True) as server:
        email_send(message("email:ops@example.com"), email_settings(server, "smtps"), http)
    assert len(server.received) == 1


def test_email_untrusted_certificate_is_final(
    http: httpx.Client, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", "/nonexistent/ca.pem")
    monkeypatch.setenv("SSL_CERT_DIR", "/nonexistent")
    with SmtpServer(tls=certificate, implicit_tls=True) as server:
        failed = email_failure(
            message("email:ops@example.com"), email_settings(server, "smtps"), http
        )
    assert failed.retryable is False
    assert "not trusted" in str(failed)
    assert server.received == []


# --- the shapes, checked by the fakes' own checks ---------------------------------------------------


def test_the_receiver_check_catches_a_body_that_breaks_the_contract() -> None:
    body = render.alertmanager_body(message("webhook:x", alert_view(1)), "x")
    assert alertmanager_problems(body) == []
    broken = {**body, "alerts": [{**body["alerts"][0], "endsAt": "2024-05-01T11:00:00Z"}]}
    assert alertmanager_problems(broken) == ["alerts[0].endsAt of a firing alert"]
    assert alertmanager_problems({**body, "version": 4}) == ["version is not '4'"]
