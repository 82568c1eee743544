"""Email through the configured SMTP server, with the standard library.

``email:<address>``: the server is ``CHM_SMTP_URL`` (``smtp://user@host:port``,
STARTTLS when the server offers it; ``smtps://`` for TLS from the first
byte), the password ``CHM_SMTP_PASSWORD``, the sender ``CHM_SMTP_FROM``.
smtplib is enough here: the worker sends synchronously, and every SMTP
answer arrives as a code this module reads (no async client is needed).

The mail is multipart/alternative: plain text and HTML (everything
escaped). Its ``Message-ID`` is derived from the message's key, the same on
every retry, so a receiver (or a person) recognizes a second copy.

Outcomes: the server accepting the mail is sent (whatever happens after:
the answer to QUIT, a closed or silent connection, is logged at debug level
and ignored, since a retry would send the mail again). A 4xx answer, a timeout or
a lost connection is retried; a 5xx answer (a refused recipient, failed
authentication) and an untrusted certificate are final. A password is sent
only over TLS (or to a server on this machine): a server that offers no
STARTTLS while CHM has a password to give is refused, never sent it in clear.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import smtplib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from urllib.parse import unquote, urlsplit

from chm.alerts import render
from chm.alerts.channels.base import (
    Channel,
    Resolved,
    SendContext,
    SendFailed,
    Undeliverable,
    register,
)
from chm.alerts.message import Message
from chm.core.redaction import Redactor
from chm.core.settings import Settings

# One address, no display name: local@domain, nothing that could end a header.
_ADDRESS = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,253})$"
)
_PORTS = {"smtp": 25, "smtps": 465}

logger = logging.getLogger("chm.alerts")


@dataclass(frozen=True)
class SmtpServer:
    scheme: str
    host: str
    port: int
    user: str | None


def parse_smtp_url(url: str) -> SmtpServer:
    """``smtp://[user@]host[:port]`` or ``smtps://...``; ``Undeliverable`` otherwise
    (the URL itself is never quoted: it may hold a password)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise Undeliverable("CHM_SMTP_URL is not a valid URL") from None
    if parts.scheme not in _PORTS or not parts.hostname:
        raise Undeliverable(
            "CHM_SMTP_URL must be smtp://[user@]host[:port] or smtps://[user@]host[:port]"
        )
    user = unquote(parts.username) if parts.username else None
    return SmtpServer(parts.scheme, parts.hostname, port or _PORTS[parts.scheme], user)


def _valid_address(address: str) -> bool:
    if not _ADDRESS.match(address):
        return False
    domain = address.rsplit("@", 1)[1]
    return ".." not in address and not domain.startswith(".") and not domain.endswith(".")


def resolve_target(target: str, settings: Settings, environ: Mapping[str, str]) -> Resolved:
    """An address, with the SMTP server, sender and password of the settings."""
    if not _valid_address(target):
        raise Undeliverable(
            "email target is not an address (local@domain, e.g. email:ops@example.com)"
        )
    smtp_url = settings.smtp_url.get_secret_value() if settings.smtp_url else ""
    if not smtp_url:
        raise Undeliverable("email needs an SMTP server: CHM_SMTP_URL is not set")
    if not settings.smtp_from:
        raise Undeliverable("email needs a sender: CHM_SMTP_FROM is not set")
    if not _valid_address(settings.smtp_from):
        raise Undeliverable("CHM_SMTP_FROM is not an address (local@domain)")
    server = parse_smtp_url(smtp_url)
    password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
    password = password or (unquote(urlsplit(smtp_url).password or "") or None)
    if password and not server.user:
        raise Undeliverable(
            "CHM_SMTP_PASSWORD is set but CHM_SMTP_URL names no user (smtp://user@host:port)"
        )
    if server.user and not password:
        raise Undeliverable("CHM_SMTP_URL names a user but CHM_SMTP_PASSWORD is not set")
    return Resolved(
        kind="email",
        target=target,
        url=smtp_url,
        secret=password,
        extra={"from": settings.smtp_from},
    )


def build_mail(message: Message, sender: str, recipient: str) -> EmailMessage:
    mail = EmailMessage()
    mail["Subject"] = render.subject(message)
    mail["From"] = sender
    mail["To"] = recipient
    mail["Date"] = formatdate(usegmt=True)
    domain = sender.rsplit("@", 1)[1]
    mail["Message-ID"] = f"<chm.{message.key}@{domain}>"
    mail["X-CHM-Delivery"] = message.key
    # RFC 3834: a machine wrote this; auto-responders stay quiet.
    mail["Auto-Submitted"] = "auto-generated"
    mail.set_content(render.text(message))
    mail.add_alternative(render.html_body(message), subtype="html")
    return mail


def _is_local(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def send(message: Message, resolved: Resolved, ctx: SendContext) -> None:
    if resolved.url is None:
        raise Undeliverable("email destination has no SMTP server")
    server = parse_smtp_url(resolved.url)
    sender = resolved.extra.get("from") or ""
    mail = build_mail(message, sender, resolved.target)
    redactor = Redactor(resolved.secrets)
    where = f"SMTP server {server.host}:{server.port}"
    timeout = ctx.settings.delivery_timeout_s
    try:
        _deliver(server, resolved.secret, mail, sender, resolved.target, timeout)
    except smtplib.SMTPRecipientsRefused as exc:
        code, text = next(iter(exc.recipients.values()), (550, b""))
        raise _refused(where, code, text, redactor, "refused the recipient") from None
    except smtplib.SMTPResponseException as exc:
        raise _refused(where, exc.smtp_code, exc.smtp_error, redactor, "answered") from None
    except smtplib.SMTPNotSupportedError as exc:
        raise SendFailed(f"{where}: {redactor.text(str(exc))}", retryable=False) from None
    except ssl.SSLCertVerificationError as exc:
        raise SendFailed(
            f"{where}: its TLS certificate is not trusted ({redactor.text(exc.verify_message)})",
            retryable=False,
        ) from None
    except _Refused as exc:
        raise SendFailed(f"{where}: {exc}", retryable=False) from None
    except (smtplib.SMTPException, OSError) as exc:
        # Timeouts, refused or lost connections, TLS failures on the way.
        raise SendFailed(
            f"{where}: {type(exc).__name__}: {redactor.text(str(exc))}", retryable=True
        ) from None


class _Refused(Exception):
    """CHM refuses to go on (a password over a connection without TLS)."""


def _refused(where: str, code: int, text: bytes | str, redactor: Redactor, verb: str) -> SendFailed:
    detail = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    reason = f"{where} {verb}: {code} {redactor.text(' '.join(detail.split()))}".rstrip()
    retryable = 400 <= code < 500
    return SendFailed(reason, retryable=retryable)


def _deliver(
    server: SmtpServer,
    password: str | None,
    mail: EmailMessage,
    sender: str,
    recipient: str,
    timeout: float,
) -> None:
    context = ssl.create_default_context()
    smtp: smtplib.SMTP
    if server.scheme == "smtps":
        smtp = smtplib.SMTP_SSL(server.host, server.port, timeout=timeout, context=context)
    else:
        smtp = smtplib.SMTP(server.host, server.port, timeout=timeout)
    try:
        smtp.ehlo()
        secure = server.scheme == "smtps"
        if not secure and smtp.has_extn("starttls"):
            smtp.starttls(context=context)
            smtp.ehlo()
            secure = True
        if server.user:
            if not secure and not _is_local(server.host):
                raise _Refused(
                    "the server offers no STARTTLS: CHM does not send the password in clear "
                    "(use smtps:// or a server with STARTTLS)"
                )
            smtp.login(server.user, password or "")
        smtp.send_message(mail, from_addr=sender, to_addrs=[recipient])
    finally:
        _end_session(smtp, server)


def _end_session(smtp: smtplib.SMTP, server: SmtpServer) -> None:
    """QUIT and close, never raising: once ``send_message`` returned the mail
    is the server's (and when an error came first, that error is the outcome)."""
    where = f"SMTP server {server.host}:{server.port}"
    try:
        code, _text = smtp.quit()
        if code != 221:
            logger.debug("%s answered QUIT with %d, ignored", where, code)
    except (smtplib.SMTPException, OSError) as exc:
        logger.debug("%s: ending the session failed (%s), ignored", where, type(exc).__name__)
    finally:
        smtp.close()


CHANNEL = register(Channel(kind="email", send=send, resolve_target=resolve_target))
