"""Fake notification endpoints over real sockets, checking each platform's
documented shapes, and a real SMTP server (aiosmtpd).

Every HTTP fake is a ``Receiver``: a threading HTTP server on 127.0.0.1 (an
OS-chosen port) that records each request (method, path, query, headers,
raw body bytes) and answers through its route's handler. ``script(path,
*answers)`` queues answers (429 with Retry-After, 503, a slow one...) that a
path gives before its handler answers again. A request whose shape is not
what the platform documents gets the platform's own error answer, and the
problems are kept in ``problems``, so a test sees exactly what was wrong.

- ``WebhookReceiver``: an Alertmanager webhook v4 receiver that checks the body
  (the monitoring contract) and the ``X-CHM-Signature`` HMAC over the raw
  bytes (401 when it does not match), and dedups on ``X-CHM-Delivery``.
- ``FakeSlack``: the Web API's ``chat.postMessage`` (bearer token, JSON body,
  ``ok``/``error`` answers, HTTP 429 + Retry-After for ``ratelimited``) and an
  incoming webhook (``invalid_payload`` 400, ``channel_not_found`` 404...); Block
  Kit checked against the documented limits.
- ``FakeTeams``: a Workflows webhook ("When a Teams webhook request is
  received"): a ``message`` with Adaptive Card attachments; answers 202.
- ``FakePagerDuty``: Events API v2 ``/v2/enqueue`` (202 ``Event processed``,
  400 ``invalid event`` with ``errors``), keeping each dedup_key's alert open
  or resolved as PagerDuty does.
- ``SmtpServer``: aiosmtpd in a thread, optionally with STARTTLS, implicit TLS
  and AUTH; received mails parsed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import ssl
import subprocess
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTP_SERVER
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    body: bytes
    at: float = 0.0

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Answer:
    status: int = 200
    body: Any = None  # bytes, str, or JSON
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


Handler = Callable[[Request], Answer]


class Receiver:
    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.routes: dict[str, Handler] = {}
        self.scripts: dict[str, deque[Answer]] = defaultdict(deque)
        self.problems: list[str] = []
        self.lock = threading.Lock()
        receiver = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *_args: Any) -> None:
                pass

            def do_POST(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("content-length") or 0)
                request = Request(
                    self.command,
                    parts.path,
                    {k: v[-1] for k, v in parse_qs(parts.query).items()},
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length) if length else b"",
                    time.monotonic(),
                )
                answer = receiver.answer(request)
                if answer.delay:
                    time.sleep(answer.delay)
                body = answer.body
                content_type = "application/json"
                if isinstance(body, str):
                    payload, content_type = body.encode(), "text/plain; charset=utf-8"
                elif isinstance(body, bytes):
                    payload = body
                elif body is None:
                    payload = b""
                else:
                    payload = json.dumps(body).encode()
                try:
                    self.send_response(answer.status)
                    for name, value in {"content-type": content_type, **answer.headers}.items():
                        self.send_header(name, value)
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def script(self, path: str, *answers: Answer) -> None:
        """Answers ``path`` gives, in order, before its handler answers again."""
        with self.lock:
            self.scripts[path].extend(answers)

    def answer(self, request: Request) -> Answer:
        with self.lock:
            self.requests.append(request)
            queue = self.scripts.get(request.path)
            scripted = queue.popleft() if queue else None
            handler = self.routes.get(request.path)
        if scripted is not None:
            return scripted
        if handler is None:
            return Answer(404, "no such path")
        return handler(request)

    def reject(self, problems: list[str]) -> None:
        with self.lock:
            self.problems.extend(problems)

    def hits(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]


# --- the generic webhook: Alertmanager webhook v4 (the monitoring contract) --------

ALERTMANAGER_KEYS = {
    "version",
    "groupKey",
    "truncatedAlerts",
    "status",
    "receiver",
    "groupLabels",
    "commonLabels",
    "commonAnnotations",
    "externalURL",
    "alerts",
}
ALERT_KEYS = {
    "status",
    "labels",
    "annotations",
    "startsAt",
    "endsAt",
    "generatorURL",
    "fingerprint",
}
LABELS = {"alertname", "client", "pipeline", "platform", "environment", "rule_type"}
ANNOTATIONS = {"summary", "client_id", "pipeline_id", "rule_id", "run_id"}


def _rfc3339(value: Any) -> bool:
    if not isinstance(value, str) or not (value.endswith("Z") or "+" in value[10:]):
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _string_map(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )


def alertmanager_problems(body: Any) -> list[str]:
    """What in ``body`` is not an Alertmanager webhook v4 body as the contract says."""
    if not isinstance(body, dict):
        return ["body is not an object"]
    problems = []
    if set(body) != ALERTMANAGER_KEYS:
        problems.append(f"top-level keys {sorted(body)}")
    if body.get("version") != "4":
        problems.append("version is not '4'")
    if body.get("status") not in ("firing", "resolved"):
        problems.append("status")
    for key in ("groupKey", "receiver", "externalURL"):
        if not isinstance(body.get(key), str):
            problems.append(f"{key} is not a string")
    for key in ("groupLabels", "commonLabels", "commonAnnotations"):
        if not _string_map(body.get(key)):
            problems.append(f"{key} is not a map of strings")
    alerts = body.get("alerts")
    if not isinstance(alerts, list) or not alerts:
        return [*problems, "alerts is not a non-empty list"]
    for i, alert in enumerate(alerts):
        if not isinstance(alert, dict) or set(alert) != ALERT_KEYS:
            problems.append(f"alerts[{i}] keys")
            continue
        if alert["status"] not in ("firing", "resolved"):
            problems.append(f"alerts[{i}].status")
        if not _string_map(alert["labels"]) or set(alert["labels"]) != LABELS:
            problems.append(f"alerts[{i}].labels")
        if not _string_map(alert["annotations"]) or set(alert["annotations"]) != ANNOTATIONS:
            problems.append(f"alerts[{i}].annotations")
        if not _rfc3339(alert["startsAt"]) or not _rfc3339(alert["endsAt"]):
            problems.append(f"alerts[{i}] times are not RFC 3339")
        if alert["status"] == "firing" and alert["endsAt"] != "0001-01-01T00:00:00Z":
            problems.append(f"alerts[{i}].endsAt of a firing alert")
        if not isinstance(alert["generatorURL"], str) or not isinstance(alert["fingerprint"], str):
            problems.append(f"alerts[{i}] generatorURL/fingerprint")
    firing = any(isinstance(a, dict) and a.get("status") == "firing" for a in alerts)
    if body.get("status") != ("firing" if firing else "resolved"):
        problems.append("group status does not follow its alerts")
    return problems


class WebhookReceiver(Receiver):
    """Receives CHM's webhook at ``PATH``: checks the signature (when it has a
    secret) and the body, keeps each delivery once (``X-CHM-Delivery``)."""

    PATH = "/hooks/chm"

    def __init__(self, secret: str | None = None) -> None:
        super().__init__()
        self.secret = secret
        self.delivered: dict[str, Any] = {}
        self.duplicates = 0
        self.routes[self.PATH] = self._receive

    @property
    def endpoint(self) -> str:
        return self.url + self.PATH

    def _receive(self, request: Request) -> Answer:
        if request.headers.get("content-type", "").split(";")[0] != "application/json":
            self.reject(["content-type"])
            return Answer(415, "want application/json")
        if self.secret is not None:
            expected = (
                "sha256=" + hmac.new(self.secret.encode(), request.body, hashlib.sha256).hexdigest()
            )
            if not hmac.compare_digest(request.headers.get("x-chm-signature", ""), expected):
                self.reject(["signature"])
                return Answer(401, "bad signature")
        key = request.headers.get("x-chm-delivery")
        if not key:
            self.reject(["no X-CHM-Delivery"])
            return Answer(400, "no X-CHM-Delivery")
        body = request.json()
        problems = alertmanager_problems(body)
        if problems:
            self.reject(problems)
            return Answer(400, {"problems": problems})
        with self.lock:
            if key in self.delivered:
                self.duplicates += 1
            else:
                self.delivered[key] = body
        return Answer(200, "")


# --- Slack: Web API chat.postMessage and incoming webhooks -------------------------------

BLOCK_TYPES = {"header", "section", "context", "divider"}


def block_kit_problems(blocks: Any) -> list[str]:
    """What in ``blocks`` breaks Block Kit's documented rules for the blocks CHM
    uses (header: plain_text <= 150; section: text <= 3000; context: 1..10
    elements; at most 50 blocks)."""
    if not isinstance(blocks, list) or not blocks:
        return ["blocks is not a non-empty list"]
    problems = []
    if len(blocks) > 50:
        problems.append(f"{len(blocks)} blocks (at most 50)")
    for i, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind not in BLOCK_TYPES:
            problems.append(f"blocks[{i}].type {kind!r}")
            continue
        text = block.get("text")
        if kind == "header":
            if not isinstance(text, dict) or text.get("type") != "plain_text":
                problems.append(f"blocks[{i}] header text is not plain_text")
            elif not 1 <= len(text.get("text", "")) <= 150:
                problems.append(f"blocks[{i}] header text length")
        elif kind == "section":
            if not isinstance(text, dict) or text.get("type") not in ("mrkdwn", "plain_text"):
                problems.append(f"blocks[{i}] section text type")
            elif not 1 <= len(text.get("text", "")) <= 3000:
                problems.append(f"blocks[{i}] section text length")
        elif kind == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
                problems.append(f"blocks[{i}] context elements")
            elif any(
                not isinstance(e, dict)
                or e.get("type") not in ("mrkdwn", "plain_text")
                or not isinstance(e.get("text"), str)
                or not e["text"]
                for e in elements
            ):
                problems.append(f"blocks[{i}] context element")
    return problems


class FakeSlack(Receiver):
    """``POST {url}/api/chat.postMessage`` with ``Authorization: Bearer <token>``,
    and an incoming webhook at ``webhook_path`` (its URL is the secret)."""

    API = "/api/chat.postMessage"
    WEBHOOK = "/services/T0000/B0000/XXXXXXXXXXXXXXXXXXXXXXXX"

    def __init__(self, token: str, channels: tuple[str, ...] = ("#ops",)) -> None:
        super().__init__()
        self.token = token
        self.channels = set(channels)
        self.posted: list[dict[str, Any]] = []
        self.routes[self.API] = self._post_message
        self.routes[self.WEBHOOK] = self._incoming_webhook

    @property
    def api_url(self) -> str:
        return self.url + "/api/"

    @property
    def webhook_url(self) -> str:
        return self.url + self.WEBHOOK

    def _post_message(self, request: Request) -> Answer:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return Answer(200, {"ok": False, "error": "invalid_auth"})
        if not request.headers.get("content-type", "").startswith("application/json"):
            self.reject(["chat.postMessage body is not JSON"])
            return Answer(200, {"ok": False, "error": "invalid_arguments"})
        body = request.json()
        if body.get("channel") not in self.channels:
            return Answer(200, {"ok": False, "error": "channel_not_found"})
        problems = self._message_problems(body)
        if problems:
            self.reject(problems)
            return Answer(200, {"ok": False, "error": "invalid_blocks"})
        self.posted.append(body)
        return Answer(
            200,
            {"ok": True, "channel": "C0123456789", "ts": "1503435956.000247", "message": {}},
        )

    def _incoming_webhook(self, request: Request) -> Answer:
        try:
            body = request.json()
        except ValueError:
            self.reject(["webhook body is not JSON"])
            return Answer(400, "invalid_payload")
        if "channel" in body:
            # An app's incoming webhook posts to its own channel only.
            self.reject(["channel given to an incoming webhook"])
            return Answer(400, "invalid_payload")
        problems = self._message_problems(body)
        if problems:
            self.reject(problems)
            return Answer(400, "invalid_blocks")
        self.posted.append(body)
        return Answer(200, "ok")

    @staticmethod
    def _message_problems(body: dict[str, Any]) -> list[str]:
        problems = block_kit_problems(body.get("blocks"))
        text = body.get("text")
        if not isinstance(text, str) or not text.strip():
            # Not an error for Slack, but CHM always sends the fallback.
            problems.append("no top-level text fallback")
        return problems


# --- Microsoft Teams: Workflows webhook with an Adaptive Card -------------------------------

CARD_ELEMENTS = {"TextBlock", "FactSet", "Container"}


def _card_element_problems(element: Any, where: str) -> list[str]:
    if not isinstance(element, dict) or element.get("type") not in CARD_ELEMENTS:
        return [f"{where}: unknown element {element!r:.60}"]
    kind = element["type"]
    if kind == "TextBlock" and not (isinstance(element.get("text"), str) and element["text"]):
        return [f"{where}: TextBlock without text"]
    if kind == "FactSet":
        facts = element.get("facts")
        if not isinstance(facts, list) or not facts:
            return [f"{where}: FactSet without facts"]
        if any(
            not isinstance(f, dict)
            or set(f) != {"title", "value"}
            or not all(isinstance(v, str) for v in f.values())
            for f in facts
        ):
            return [f"{where}: a fact is not {{title, value}} strings"]
    if kind == "Container":
        items = element.get("items")
        if not isinstance(items, list) or not items:
            return [f"{where}: Container without items"]
        return [
            p
            for j, item in enumerate(items)
            for p in _card_element_problems(item, f"{where}.items[{j}]")
        ]
    return []


def adaptive_card_problems(card: Any) -> list[str]:
    """What in ``card`` is not an Adaptive Card (1.4 or later) of the elements
    CHM uses."""
    if not isinstance(card, dict) or card.get("type") != "AdaptiveCard":
        return ["content is not an AdaptiveCard"]
    problems = []
    version = card.get("version")
    try:
        major, minor = (int(p) for p in str(version).split("."))
        if (major, minor) < (1, 4):
            problems.append(f"version {version} (want 1.4 or later)")
    except ValueError:
        problems.append(f"version {version!r}")
    body = card.get("body")
    if not isinstance(body, list) or not body:
        problems.append("body is not a non-empty list")
    else:
        for i, element in enumerate(body):
            problems.extend(_card_element_problems(element, f"body[{i}]"))
    for action in card.get("actions", []):
        if action.get("type") != "Action.OpenUrl" or not str(action.get("url", "")).startswith(
            ("http://", "https://")
        ):
            problems.append(f"action {action!r:.60}")
    return problems


class FakeTeams(Receiver):
    """A Workflows webhook URL (its ``sig`` query parameter is the secret)."""

    PATH = "/workflows/8e3c/triggers/manual/paths/invoke"

    def __init__(self, sig: str) -> None:
        super().__init__()
        self.sig = sig
        self.cards: list[dict[str, Any]] = []
        self.routes[self.PATH] = self._invoke

    @property
    def workflow_url(self) -> str:
        return f"{self.url}{self.PATH}?api-version=1&sp=%2Ftriggers%2Fmanual%2Frun&sig={self.sig}"

    def _invoke(self, request: Request) -> Answer:
        if request.query.get("sig") != self.sig:
            return Answer(401, {"error": {"code": "DirectApiAuthorizationRequired"}})
        body = request.json()
        problems = []
        if body.get("type") != "message":
            problems.append("type is not 'message'")
        attachments = body.get("attachments")
        if not isinstance(attachments, list) or not attachments:
            problems.append("attachments is not a non-empty list")
            attachments = []
        for attachment in attachments:
            if attachment.get("contentType") != "application/vnd.microsoft.card.adaptive":
                problems.append(f"contentType {attachment.get('contentType')!r}")
            problems.extend(adaptive_card_problems(attachment.get("content")))
        if problems:
            self.reject(problems)
            return Answer(
                400, {"error": {"code": "InvalidRequestContent", "message": "; ".join(problems)}}
            )
        self.cards.extend(a["content"] for a in attachments)
        return Answer(202, "")


# --- PagerDuty Events API v2 ------------------------------------------------------------------

SEVERITIES = {"critical", "error", "warning", "info"}


def pagerduty_problems(event: Any) -> list[str]:
    """What in ``event`` breaks the Events API v2 "Send an Alert Event" parameters."""
    if not isinstance(event, dict):
        return ["event is not an object"]
    problems = []
    key = event.get("routing_key")
    if not isinstance(key, str) or len(key) != 32:
        problems.append("Length of 'routing_key' is incorrect (should be 32 characters)")
    action = event.get("event_action")
    if action not in ("trigger", "acknowledge", "resolve"):
        problems.append("'event_action' is invalid")
    dedup = event.get("dedup_key")
    if dedup is not None and (not isinstance(dedup, str) or len(dedup) > 255):
        problems.append("'dedup_key' is invalid")
    if action in ("acknowledge", "resolve") and not dedup:
        problems.append("'dedup_key' is required for acknowledge and resolve")
    if action == "trigger":
        payload = event.get("payload")
        if not isinstance(payload, dict):
            return [*problems, "'payload' is missing or not an object"]
        summary = payload.get("summary")
        if not isinstance(summary, str) or not summary or len(summary) > 1024:
            problems.append("'payload.summary' is missing or longer than 1024 characters")
        if not isinstance(payload.get("source"), str) or not payload["source"]:
            problems.append("'payload.source' is missing")
        if payload.get("severity") not in SEVERITIES:
            problems.append("'payload.severity' is invalid")
        if "timestamp" in payload and not _rfc3339(payload["timestamp"]):
            problems.append("'payload.timestamp' is not ISO 8601")
        for name in ("component", "group", "class"):
            if name in payload and not isinstance(payload[name], str):
                problems.append(f"'payload.{name}' is not a string")
        if "custom_details" in payload and not isinstance(payload["custom_details"], dict):
            problems.append("'payload.custom_details' is not an object")
        unknown = set(payload) - {
            "summary", "source", "severity", "timestamp", "component", "group", "class",
            "custom_details",
        }  # fmt: skip
        if unknown:
            problems.append(f"unknown payload fields {sorted(unknown)}")
        for link in event.get("links", []):
            if not isinstance(link, dict) or not isinstance(link.get("href"), str):
                problems.append("a link has no href")
    return problems


class FakePagerDuty(Receiver):
    """``POST /v2/enqueue``; ``alerts`` holds each dedup_key's state."""

    PATH = "/v2/enqueue"

    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict[str, Any]] = []
        self.alerts: dict[str, str] = {}
        self.routes[self.PATH] = self._enqueue

    @property
    def events_url(self) -> str:
        return self.url + self.PATH

    def _enqueue(self, request: Request) -> Answer:
        try:
            event = request.json()
        except ValueError:
            return Answer(
                400,
                {
                    "status": "invalid event",
                    "message": "Event object is invalid",
                    "errors": ["not JSON"],
                },
            )
        problems = pagerduty_problems(event)
        if problems:
            self.reject(problems)
            return Answer(
                400,
                {
                    "status": "invalid event",
                    "message": "Event object is invalid",
                    "errors": problems,
                },
            )
        with self.lock:
            self.events.append(event)
            dedup = event["dedup_key"]
            if event["event_action"] == "trigger":
                self.alerts[dedup] = "triggered"
            elif event["event_action"] == "resolve" and dedup in self.alerts:
                # A resolve for an unknown key is dropped, as PagerDuty does.
                self.alerts[dedup] = "resolved"
        return Answer(
            202,
            {"status": "success", "message": "Event processed", "dedup_key": event["dedup_key"]},
        )


# --- SMTP: aiosmtpd in a thread --------------------------------------------------------------------


class _Controller(Controller):
    """aiosmtpd's Controller on an OS-chosen port (port 0), read back once bound."""

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage


class _Inbox:
    def __init__(self, refuse: dict[str, int]) -> None:
        self.received: list[Received] = []
        self.refuse = refuse

    async def handle_RCPT(
        self,
        server: SMTP_SERVER,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        code = self.refuse.get(address)
        if code is not None:
            return f"{code} {'4.2.1 mailbox busy' if code < 500 else '5.1.1 no such user'}"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP_SERVER, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content
        assert isinstance(raw, bytes)
        parsed = message_from_bytes(raw, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        self.received.append(Received(str(envelope.mail_from), list(envelope.rcpt_tos), parsed))
        return "250 Message accepted for delivery"


class SmtpServer:
    """An SMTP server on 127.0.0.1. ``tls``: a (cert, key) pair to offer STARTTLS
    with (``implicit_tls``: TLS from the first byte, as smtps://); ``login``: a
    (user, password) the server requires; ``refuse``: recipient -> SMTP code."""

    def __init__(
        self,
        *,
        tls: tuple[Path, Path] | None = None,
        implicit_tls: bool = False,
        login: tuple[str, str] | None = None,
        refuse: dict[str, int] | None = None,
    ) -> None:
        self.inbox = _Inbox(refuse or {})
        self.logins: list[str] = []
        context = None
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
        kwargs: dict[str, Any] = {}
        if login is not None:

            def authenticate(
                server: SMTP_SERVER,
                session: Session,
                envelope: Envelope,
                mechanism: str,
                data: Any,
            ) -> AuthResult:
                ok = (
                    isinstance(data, LoginPassword)
                    and (
                        data.login.decode(),
                        data.password.decode(),
                    )
                    == login
                )
                if ok:
                    self.logins.append(data.login.decode())
                return AuthResult(success=ok, handled=False)

            kwargs.update(
                authenticator=authenticate, auth_required=True, auth_require_tls=tls is not None
            )
        self.controller = _Controller(
            self.inbox,
            hostname="127.0.0.1",
            port=0,
            ssl_context=context if implicit_tls else None,
            tls_context=None if implicit_tls else context,
            **kwargs,
        )
        self.controller.start()

    @property
    def port(self) -> int:
        return int(self.controller.port)

    @property
    def received(self) -> list[Received]:
        return self.inbox.received

    def url(self, scheme: str = "smtp", user: str | None = None) -> str:
        who = f"{user}@" if user else ""
        return f"{scheme}://{who}127.0.0.1:{self.port}"

    def close(self) -> None:
        self.controller.stop()

    def __enter__(self) -> SmtpServer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def self_signed_certificate(directory: Path) -> tuple[Path, Path] | None:
    """A certificate for 127.0.0.1 and localhost (openssl), or None without openssl.
    Valid from now for two days: made at test time, never stale."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key
