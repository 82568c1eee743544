"""Secret redaction for anything CHM stores or shows (SE-002, SE-003)."""

from __future__ import annotations

import logging
import re
import threading
from functools import lru_cache
from typing import Any

REDACTED = "[REDACTED]"

# Key fragments that mark a value as secret, matched on the key lower-cased
# with "-" and " " read as "_": "X-Api-Key", "client_secret", "dbPassword"...
_SECRET_KEY_PARTS = (
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "credential",
    "private_key",
    "privatekey",
    "access_key",
    "accesskey",
    "session_key",
    "cookie",
    "signature",
)
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/\s@]+)@")
_BEARER = re.compile(r"\b(?P<kind>Bearer|Basic|Token)\s+[A-Za-z0-9._~+/=-]{6,}", re.IGNORECASE)
# Secret assignments inside URLs and connection strings: an Azure SAS
# "?sv=...&sig=...", "access_token=...", "...;AccountKey=...;" (ADF and
# Databricks payloads carry such strings in their parameters).
_SECRET_ASSIGNMENT = re.compile(
    r"(?P<name>\b(?:sig|signature|access_token|id_token|refresh_token|token|api_key|apikey"
    r"|password|pwd|client_secret|secret|AccountKey|SharedAccessKey|SharedAccessSignature))"
    r"=(?P<value>[^&;\s\"']+)",
    re.IGNORECASE,
)


# Payloads repeat the same few keys over and over: remember each key's verdict.
@lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    normalized = _CAMEL_BOUNDARY.sub("_", key).lower().replace("-", "_").replace(" ", "_")
    compact = normalized.replace("_", "")
    return any(part in normalized or part.replace("_", "") in compact for part in _SECRET_KEY_PARTS)


def redact_text(text: str) -> str:
    """Credentials inside free text: URL userinfo, secret ``name=value`` assignments
    (URL query strings, connection strings) and bearer/basic/token strings."""
    text = _URL_USERINFO.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", text)
    text = _SECRET_ASSIGNMENT.sub(lambda m: f"{m.group('name')}={REDACTED}", text)
    return _BEARER.sub(lambda m: f"{m.group('kind')} {REDACTED}", text)


def redact(value: Any, extra_secrets: tuple[str, ...] = ()) -> Any:
    """A copy of ``value`` with secret-looking keys' values and embedded credentials
    replaced by ``"[REDACTED]"``, through nested dicts and lists. ``extra_secrets``
    are known secret values (configured tokens) removed wherever they appear."""
    if isinstance(value, dict):
        return {
            k: (
                REDACTED
                if isinstance(k, str) and is_secret_key(k) and v not in (None, "")
                else redact(v, extra_secrets)
            )
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v, extra_secrets) for v in value]
    if isinstance(value, str):
        text = redact_text(value)
        for secret in extra_secrets:
            if secret:
                text = text.replace(secret, REDACTED)
        return text
    return value


# The secrets this process was configured with (API token, database password,
# source tokens), removed from every log line by RedactingFilter.
_known_secrets: set[str] = set()
_known_lock = threading.Lock()
# Shorter values would blank out ordinary words in the logs.
_MIN_SECRET_LENGTH = 4


def register_secret(value: str | None) -> None:
    """Remember a configured secret so that no log line of this process shows it."""
    if value and len(value) >= _MIN_SECRET_LENGTH:
        with _known_lock:
            _known_secrets.add(value)


def redact_known(text: str) -> str:
    """``text`` with credentials and every registered secret removed."""
    text = redact_text(text)
    for secret in sorted(_known_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


class RedactingFilter(logging.Filter):
    """A handler filter: a record's message, arguments and traceback without
    credentials or registered secrets, whoever logged it (CHM, uvicorn's
    access log, httpx/httpcore at DEBUG, SQLAlchemy...). Arguments stay in
    place, redacted one by one, for formatters that read them (uvicorn's)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact_known(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redacted_arg(arg) for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: _redacted_arg(arg) for key, arg in record.args.items()}
        if record.exc_info and not record.exc_text:
            record.exc_text = redact_known(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact_known(record.exc_text)
        return True


def _redacted_arg(arg: Any) -> Any:
    if isinstance(arg, (int, float, bool)) or arg is None:
        return arg
    text = (
        arg
        if isinstance(arg, str)
        else repr(arg)
        if isinstance(arg, (bytes, tuple, list, dict))
        else str(arg)
    )
    cleaned = redact_known(text)
    return arg if cleaned == text else cleaned
