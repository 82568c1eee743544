"""Where a rule's ``destination`` ("kind:target") sends (monitoring contract, "Delivery").

Named destinations live in the ``[[destinations]]`` entries of the CHM_CONFIG
file (the sources file; ingestion passes them through unvalidated). Each
names the environment variables that hold its URL, signing secret or routing
key: the file, like the database, never holds a secret.

```toml
[[destinations]]
name = "ops-webhook"
kind = "webhook"
url_env = "OPS_WEBHOOK_URL"
secret_env = "OPS_WEBHOOK_SECRET"   # optional: HMAC-SHA256 signing key
```

What each kind's entry holds, and how a target that is not a name resolves
(``slack:#channel``, ``email:<address>``), is declared by the kind's channel
(``Channel.named``, ``Channel.resolve_target``): the kinds are the channels
registered, nothing here lists them. Email takes no named destination: its
target is the address.

``resolve`` answers a ``Resolved`` (secrets in memory only) or raises
``Undeliverable`` with a reason a person can act on, which never holds a
secret value: the names of variables, never their values.
"""

from __future__ import annotations

import hashlib
import re
import threading
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError, field_validator

import chm.alerts.channels  # noqa: F401  (registers every channel)
from chm.alerts.channels.base import Channel, Resolved, Undeliverable, channel_for, kinds
from chm.core.redaction import redact_text, register_secret
from chm.core.settings import Settings

# The same rule as a source's token_env (chm.ingestion.sources.EnvVarName).
EnvVarName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=200)]
# A destination's name: what a rule says after "kind:". No "#" first (Slack's
# "#channel" is a channel, not a name), no spaces, nothing a URL needs.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
DestinationName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
_NAME = re.compile(NAME_PATTERN)
_KIND = re.compile(r"^[a-z][a-z0-9_-]{0,49}$")

# The environment-variable fields of an entry, and where each goes in Resolved.
ENV_FIELDS = ("url_env", "secret_env", "routing_key_env")


class DestinationsError(Exception):
    """The CHM_CONFIG file cannot be read, or its ``[[destinations]]`` are invalid.
    The message names the file, the destination and the field."""


class Destination(BaseModel):
    """One ``[[destinations]]`` entry: a name, a kind, and environment-variable names."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: DestinationName
    kind: str
    url_env: EnvVarName | None = None
    secret_env: EnvVarName | None = None
    routing_key_env: EnvVarName | None = None

    @field_validator("kind")
    @classmethod
    def _registered_kind(cls, kind: str) -> str:
        channel = channel_for(kind)
        if channel is None:
            raise ValueError(f"unknown kind {kind!r}; the kinds are {', '.join(kinds())}")
        if channel.named is None:
            named = [k for k in kinds() if (c := channel_for(k)) is not None and c.named]
            raise ValueError(
                f"kind {kind!r} takes no named destination (a rule names its target "
                f"directly, e.g. {kind}:<target>); the named kinds are {', '.join(named)}"
            )
        return kind

    def env(self, field: str) -> str | None:
        value = getattr(self, field)
        return value if isinstance(value, str) else None


class Destinations:
    """The validated named destinations, by name."""

    def __init__(self, destinations: Sequence[Destination] = ()) -> None:
        self.all = list(destinations)
        self._by_name = {d.name: d for d in self.all}

    def get(self, name: str) -> Destination | None:
        return self._by_name.get(name)

    def __len__(self) -> int:
        return len(self.all)


def _where(raw: Sequence[Any], index: int) -> str:
    entry = raw[index] if index < len(raw) else None
    name = entry.get("name") if isinstance(entry, dict) else None
    return f"destination {name!r} (destinations[{index}])" if name else f"destinations[{index}]"


def parse_destinations(raw: Any, origin: str) -> Destinations:
    """Validate the ``destinations`` list of a parsed TOML document (``raw`` may be
    None: no destinations); ``origin`` names the file in errors."""
    if raw is None:
        return Destinations()
    if not isinstance(raw, list):
        raise DestinationsError(
            f"{origin}: field 'destinations': must be an array of tables ([[destinations]])"
        )
    problems: list[str] = []
    parsed: list[Destination] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(raw):
        where = _where(raw, index)
        if not isinstance(entry, dict):
            problems.append(f"{where}: must be a table ([[destinations]])")
            continue
        try:
            destination = Destination.model_validate(entry)
        except ValidationError as exc:
            for error in exc.errors():
                field = ".".join(str(p) for p in error.get("loc", ())) or "kind"
                message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
                problems.append(f"{where}: field {field!r}: {message}")
            continue
        problems.extend(f"{where}: {p}" for p in _field_problems(destination))
        if destination.name in seen:
            problems.append(
                f"{where}: field 'name': duplicates destinations[{seen[destination.name]}]"
            )
        seen.setdefault(destination.name, index)
        parsed.append(destination)
    if problems:
        raise DestinationsError(f"{origin}: " + "; ".join(problems))
    return Destinations(parsed)


def _field_problems(destination: Destination) -> list[str]:
    channel = channel_for(destination.kind)
    # The kind's validator made sure it is registered and takes names.
    named = channel.named if channel is not None else None
    if named is None:
        return []
    problems = [
        f"field {field!r}: required for a {destination.kind} destination"
        for field in named.required
        if destination.env(field) is None
    ]
    allowed = (*named.required, *named.optional)
    problems.extend(
        f"field {field!r}: a {destination.kind} destination has no {field} "
        f"(it has {', '.join(allowed)})"
        for field in ENV_FIELDS
        if field not in allowed and destination.env(field) is not None
    )
    return problems


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DestinationsError(f"{path}: the config file (CHM_CONFIG) does not exist") from None
    except OSError as exc:
        raise DestinationsError(f"{path}: cannot read the config file: {exc}") from None


def _parse_bytes(data: bytes, path: Path) -> Destinations:
    try:
        document = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise DestinationsError(f"{path}: cannot read the config file: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise DestinationsError(f"{path}: not valid TOML: {exc}") from None
    return parse_destinations(document.get("destinations"), str(path))


def load_destinations(path: Path | None) -> Destinations:
    """The named destinations of the CHM_CONFIG file at ``path``; none without a
    file (``slack:#channel`` and ``email:`` need no file). ``DestinationsError``
    when the file is missing, unreadable or its destinations are invalid."""
    if path is None:
        return Destinations()
    return _parse_bytes(_read(path), path)


class DestinationsCache:
    """``load_destinations`` that parses the file again only when its content
    changed (the file is small: its bytes are read and hashed on every use, so
    no edit is ever missed, however fast it follows another); thread-safe.
    An invalid file raises on every use until it is fixed: nothing invalid is
    kept."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded: tuple[Path, bytes, Destinations] | None = None

    def load(self, path: Path | None) -> Destinations:
        if path is None:
            return Destinations()
        data = _read(path)
        digest = hashlib.sha256(data).digest()
        with self._lock:
            loaded = self._loaded
        if loaded is not None and loaded[0] == path and loaded[1] == digest:
            return loaded[2]
        destinations = _parse_bytes(data, path)
        with self._lock:
            self._loaded = (path, digest, destinations)
        return destinations


# --- resolving a rule's destination ------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A destination string split: ``kind`` and ``target``."""

    kind: str
    target: str


def split_destination(destination: str) -> Target:
    """``"kind:target"`` split at its first colon; ``Undeliverable`` when it is not
    one (the string is shown redacted: a rule might hold a URL by mistake)."""
    kind, colon, target = destination.partition(":")
    if not colon or not _KIND.match(kind) or not target.strip():
        raise Undeliverable(
            f"destination {redact_text(destination)!r} is not 'kind:target' "
            f"(e.g. webhook:ops-webhook, slack:#ops, email:ops@example.com)"
        )
    return Target(kind, target)


def resolve(
    destination: str,
    destinations: Destinations | None,
    settings: Settings,
    environ: Mapping[str, str],
) -> Resolved:
    """``destination`` ("kind:target", as a rule says) resolved against the named
    ``destinations``, the ``settings`` and the ``environ``: secrets read now,
    held in memory only. ``Undeliverable`` (with a reason that holds no secret)
    for an unknown kind, an unknown name, a variable not set, a server not
    configured, a malformed target."""
    split = split_destination(destination)
    channel = channel_for(split.kind)
    if channel is None:
        raise Undeliverable(
            f"unknown destination kind {split.kind!r}; the kinds are {', '.join(kinds())}"
        )
    resolved = None
    if channel.resolve_target is not None:
        resolved = channel.resolve_target(split.target, settings, environ)
    if resolved is None:
        resolved = _resolve_named(channel, split.target, destinations, environ)
    # Whatever logs a line from now on (this process, the clients' libraries)
    # has these values removed (chm.core.redaction.RedactingFilter).
    for secret in resolved.secrets:
        register_secret(secret)
    return resolved


def _resolve_named(
    channel: Channel, name: str, destinations: Destinations | None, environ: Mapping[str, str]
) -> Resolved:
    kind = channel.kind
    if not _NAME.match(name):
        # Never echoed: a URL put in a rule by mistake would carry its secret.
        raise Undeliverable(
            f"{kind} target is not a destination name: name a [[destinations]] entry of the "
            "CHM_CONFIG file (its URL or key stays in an environment variable)"
        )
    found = destinations.get(name) if destinations is not None else None
    if found is None:
        where = (
            "the CHM_CONFIG file has no [[destinations]]"
            if destinations is None or len(destinations) == 0
            else "no [[destinations]] entry of the CHM_CONFIG file has that name"
        )
        raise Undeliverable(f"unknown {kind} destination {name!r}: {where}")
    if found.kind != kind:
        raise Undeliverable(f"destination {name!r} is a {found.kind} destination, not {kind}")
    values: dict[str, str | None] = {}
    for field in ENV_FIELDS:
        variable = found.env(field)
        if variable is None:
            values[field] = None
            continue
        value = environ.get(variable, "")
        if not value:
            raise Undeliverable(
                f"destination {name!r}: environment variable {variable} ({field}) is not set"
            )
        values[field] = value
    url = values["url_env"]
    if url is not None and not _is_http_url(url):
        raise Undeliverable(
            f"destination {name!r}: environment variable {found.url_env} (url_env) "
            "does not hold an http:// or https:// URL"
        )
    return Resolved(
        kind=kind,
        target=name,
        name=name,
        url=url,
        secret=values["secret_env"],
        routing_key=values["routing_key_env"],
    )


def _is_http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)
