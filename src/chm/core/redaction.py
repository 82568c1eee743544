"""Secret redaction for anything CHM stores or shows (SE-002, SE-003)."""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import orjson

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
# What ``Redactor.leaves_unchanged`` looks for in a document lower-cased without
# "_", "-" and " ": every secret key part so compacted ("passw" stands for
# "password" and "passwd"), and the bearer keywords.
_NOT_LETTERS = bytes(c for c in range(256) if not ord("a") <= c <= ord("z"))
_COMPACT_NEEDLES = (
    "passw",
    *sorted({p.replace("_", "") for p in _SECRET_KEY_PARTS if not p.startswith("passw")}),
    "bearer",
    "basic",
)
# Every pattern below runs in time linear in the text, whatever the text (a
# megabyte of letters, of "a://", of "token=", of spaces after "Bearer"): a
# match may only start where its first token starts (a word boundary, or the
# start of a run of scheme characters), and its quantifiers are possessive,
# so no start position rescans what another one already scanned.
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
# "scheme://userinfo@": the scheme (RFC 3986: a letter, then letters, digits,
# "+", "-", ".") is the run of scheme characters before "://" from its first
# letter on. The match starts at the start of that run (the lookbehind), steps
# over the run's leading non-letters, and keeps them: the output is the same as
# a match starting at the first letter, but a run of n letters costs n steps
# once instead of n steps from each of its n positions.
_URL_USERINFO = re.compile(
    r"(?<![a-zA-Z0-9+.-])(?P<scheme>[0-9+.-]*+[a-zA-Z][a-zA-Z0-9+.-]*+://)(?P<userinfo>[^/\s@]++)@"
)
_BEARER = re.compile(r"\b(?P<kind>Bearer|Basic|Token)\s++[A-Za-z0-9._~+/=-]{6,}+", re.IGNORECASE)
# Secret assignments inside URLs and connection strings: an Azure SAS
# "?sv=...&sig=...", "access_token=...", "...;AccountKey=...;" (ADF and
# Databricks payloads carry such strings in their parameters).
_SECRET_ASSIGNMENT = re.compile(
    r"(?P<name>\b(?:sig|signature|access_token|id_token|refresh_token|token|api_key|apikey"
    r"|password|pwd|client_secret|secret|AccountKey|SharedAccessKey|SharedAccessSignature))"
    r"=(?P<value>[^&;\s\"']++)",
    re.IGNORECASE,
)


# Keys longer than this are judged each time instead of remembered: a
# payload's odd long key must not pin megabytes in the cache.
_CACHED_KEY_LENGTH = 200


def is_secret_key(key: str) -> bool:
    return _is_secret_key_cached(key) if len(key) <= _CACHED_KEY_LENGTH else _judge_key(key)


# Payloads repeat the same few keys over and over: remember each key's verdict.
@lru_cache(maxsize=4096)
def _is_secret_key_cached(key: str) -> bool:
    return _judge_key(key)


def _judge_key(key: str) -> bool:
    normalized = _CAMEL_BOUNDARY.sub("_", key).lower().replace("-", "_").replace(" ", "_")
    compact = normalized.replace("_", "")
    return any(part in normalized or part.replace("_", "") in compact for part in _SECRET_KEY_PARTS)


# What each credential pattern cannot match without: "://" (_URL_USERINFO),
# "=" (_SECRET_ASSIGNMENT), or one of _BEARER's keywords, which it reads in any
# case (re.IGNORECASE; in non-ASCII text its Unicode case folding, so there the
# same flags are asked: U+017F, the long s, matches "s").
_BEARER_KEYWORD = re.compile("bearer|basic|token", re.IGNORECASE)


def _may_hold_credentials(text: str) -> bool:
    """False only when none of ``redact_text``'s patterns can match in ``text``."""
    if "://" in text or "=" in text:
        return True
    if text.isascii():  # O(1) for str: ASCII lower-casing is all IGNORECASE does
        lowered = text.lower()
        return "bearer" in lowered or "basic" in lowered or "token" in lowered
    return _BEARER_KEYWORD.search(text) is not None


def redact_text(text: str) -> str:
    """Credentials inside free text: URL userinfo, secret ``name=value`` assignments
    (URL query strings, connection strings) and bearer/basic/token strings."""
    if not _may_hold_credentials(text):
        return text  # most texts: none of the three substitutions could match
    text = _URL_USERINFO.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", text)
    text = _SECRET_ASSIGNMENT.sub(lambda m: f"{m.group('name')}={REDACTED}", text)
    return _BEARER.sub(lambda m: f"{m.group('kind')} {REDACTED}", text)


def redact(value: Any, extra_secrets: tuple[str, ...] = ()) -> Any:
    """A copy of ``value`` with secret-looking keys' values and embedded credentials
    replaced by ``"[REDACTED]"``, through nested dicts and lists. ``extra_secrets``
    are known secret values (configured tokens) removed wherever they appear."""
    return Redactor(extra_secrets).value(value)


class Redactor:
    """Removes credentials, and the known secret values it was given (a source's
    token, a login's answer, an OpenLineage key), from what CHM stores or shows:
    the one redaction of every path, whichever secrets that path knows."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first: a secret that holds another is removed whole, never
        # left in pieces around the shorter one's marker.
        self.secrets: tuple[str, ...] = tuple(
            sorted({secret for secret in secrets if secret}, key=len, reverse=True)
        )
        # Each secret as it reads inside a JSON string (escaping is character by
        # character, so a string holding the secret holds this in its JSON);
        # None when one cannot be written as JSON (a lone surrogate).
        self._secrets_in_json: tuple[str, ...] | None
        try:
            self._secrets_in_json = tuple(orjson.dumps(s).decode()[1:-1] for s in self.secrets)
        except TypeError:
            self._secrets_in_json = None

    def with_secret(self, secret: str) -> Redactor:
        """This redactor, knowing one more secret value."""
        return Redactor((*self.secrets, secret))

    def text(self, text: str) -> str:
        """``text`` without credentials (``redact_text``) nor any known secret."""
        text = redact_text(text)
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text

    def value(self, value: Any) -> Any:
        """A copy of ``value`` with secret-looking keys' values, credentials and known
        secrets replaced by ``"[REDACTED]"``, through nested dicts and lists."""
        if isinstance(value, dict):
            return {
                k: (
                    REDACTED
                    if isinstance(k, str) and is_secret_key(k) and v not in (None, "")
                    else self.value(v)
                )
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, str):
            return self.text(value)
        return value

    def stored_text(self, text: str) -> str:
        """A failure text as CHM stores it: redacted, then capped (``stored_text``)."""
        return cap_text(self.text(text))

    def stored_payload(self, value: Any) -> Any:
        """A payload as CHM stores it: redacted, then capped (``stored_payload``).

        Most payloads hold nothing to redact, which their compact JSON shows
        (``leaves_unchanged``): then ``value`` itself is stored, measured by that
        same JSON, without walking it."""
        if value is None:
            return None
        try:
            document = orjson.dumps(value)
        except TypeError:
            return cap_payload(self.value(value))
        if not self.leaves_unchanged(document):
            return cap_payload(self.value(value))
        if len(document) <= MAX_STORED_PAYLOAD_BYTES:
            return value
        return {TRUNCATED_KEY: True, "original_bytes": len(document)}

    def leaves_unchanged(self, document: bytes) -> bool:
        """True when ``self.value`` would give back a value equal to the one whose
        compact JSON (``orjson.dumps``) is ``document``: no key of it looks secret
        (``is_secret_key``), none of its strings holds where a credential pattern
        could start (``_may_hold_credentials``) or a known secret.

        Judged on the whole document at once, which holds every key and string:
        a JSON string holds its text as is but for ``"``, ``\\`` and control
        characters, escaped, which no trigger holds. False may be a false alarm
        (a trigger in a key, a secret-looking value): the walk then decides.
        """
        text = document.decode()
        if "://" in text or "=" in text:
            return False
        # is_secret_key(k) is exactly: a compact part in k lower-cased without
        # "_", "-" and " " (see _judge_key). k lies whole in the document, so
        # that compact form lies whole in the document's, and so do the
        # bearer keywords of any string. Every needle is made of letters: an
        # ASCII document is searched as its letters alone (dropping the rest
        # only brings more letters together: more matches, never fewer).
        if text.isascii():
            letters = document.lower().translate(None, _NOT_LETTERS).decode()
        else:
            if _BEARER_KEYWORD.search(text) is not None:  # Unicode case folding
                return False
            letters = text.lower().replace("_", "").replace("-", "").replace(" ", "")
        for needle in _COMPACT_NEEDLES:  # a loop: any() over a generator costs more here
            if needle in letters:
                return False
        secrets = self._secrets_in_json
        if secrets is None:
            return False
        return not secrets or all(secret not in text for secret in secrets)


# --- what CHM stores of a run: redacted, then capped ----------------------------------
#
# One rule for every path that stores a run (manual POST/PATCH, ingestion,
# OpenLineage events): credentials are removed first and the result is capped
# after, so a secret that the cap would cut in half (and so hide from the
# patterns) is already gone. Redaction is linear, so the order costs nothing.

# A failure text longer than this many characters is cut to this length,
# ending with TRUNCATION_MARKER (the marker counts in the length).
MAX_STORED_TEXT = 20_000
TRUNCATION_MARKER = "… [truncated, {length} characters]"
# A payload (source_payload, an ingested run's metrics) larger than this as
# compact JSON (UTF-8 bytes) is replaced by {"_chm_truncated": true,
# "original_bytes": <its size>}.
MAX_STORED_PAYLOAD_BYTES = 1024 * 1024
TRUNCATED_KEY = "_chm_truncated"


def cap_text(text: str, limit: int = MAX_STORED_TEXT) -> str:
    """``text`` itself when it has at most ``limit`` characters, else its start and
    the marker "… [truncated, N characters]" (N: the whole text's length), in
    ``limit`` characters."""
    if len(text) <= limit:
        return text
    marker = TRUNCATION_MARKER.format(length=len(text))
    return text[: max(limit - len(marker), 0)] + marker


def json_size(value: Any) -> int:
    """The size of ``value`` as compact JSON, in UTF-8 bytes."""
    try:
        return len(orjson.dumps(value))
    except TypeError:
        # What orjson refuses (an integer past 64 bits, a non-string key) the
        # database's own JSON serializer writes: measure it the same way.
        return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


def cap_payload(value: Any, limit: int = MAX_STORED_PAYLOAD_BYTES) -> Any:
    """``value`` itself when its JSON has at most ``limit`` bytes, else the marker
    object ``{"_chm_truncated": true, "original_bytes": <size>}``."""
    if value is None:
        return None
    size = json_size(value)
    if size <= limit:
        return value
    return {TRUNCATED_KEY: True, "original_bytes": size}


def stored_text(text: str, extra_secrets: tuple[str, ...] = ()) -> str:
    """A failure text as CHM stores it: credentials and ``extra_secrets`` removed,
    then capped at MAX_STORED_TEXT characters."""
    return Redactor(extra_secrets).stored_text(text)


def stored_payload(value: Any, extra_secrets: tuple[str, ...] = ()) -> Any:
    """A payload as CHM stores it: secret keys' values, credentials and
    ``extra_secrets`` removed, then capped at MAX_STORED_PAYLOAD_BYTES."""
    return Redactor(extra_secrets).stored_payload(value)


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
    """``text`` with credentials and every registered secret removed (the longest
    first, so that none leaves a piece of another behind)."""
    return Redactor(sorted(_known_secrets, key=len, reverse=True)).text(text)


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
