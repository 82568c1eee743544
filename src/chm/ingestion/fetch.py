"""One source's HTTP: timeouts, retries with backoff and jitter, Retry-After (FR-015).

Connection errors, timeouts, 429, 5xx and unreadable bodies are retried up to
``max_retries`` times after the first try, with exponential backoff and
jitter (tenacity); a ``Retry-After`` header, in seconds or as an HTTP date,
replaces the backoff for that wait, and one longer than ``max_retry_wait_s``
fails the pipeline at once instead of sleeping. Any other non-2xx answer
fails the pipeline at once. The token goes only to this source, as
``Authorization: Bearer``; redirects are never followed, so it cannot be
carried to another host.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import re
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from pydantic import SecretStr
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from chm.core.redaction import redact_text
from chm.core.timeutil import utcnow
from chm.ingestion.config import SourceBase
from chm.ingestion.connectors.base import PageRequest

logger = logging.getLogger("chm.ingestion")

_SECONDS = re.compile(r"^\d+(\.\d+)?$")
_BODY_EXCERPT = 200


class SourceError(Exception):
    """The source cannot give this pipeline's runs now; the message is safe to show."""


class RetryableError(Exception):
    """A failure worth another try, possibly after the wait the source asked for."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds from now: delay-seconds or an HTTP date; None if unreadable."""
    if value is None:
        return None
    text = value.strip()
    if _SECONDS.match(text):
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or utcnow())).total_seconds())


class SourceClient:
    """Fetches the pages of one source; one instance (and connection pool) per source."""

    def __init__(
        self,
        source: SourceBase,
        token: SecretStr | None,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.source = source
        # The token, for removal from anything this source sends back.
        self.secrets: tuple[str, ...] = (token.get_secret_value(),) if token is not None else ()
        headers = {"Accept": "application/json", "User-Agent": "chm-ingest"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token.get_secret_value()}"
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(source.timeout_s),
            follow_redirects=False,
        )
        self._sleep = sleep
        self._backoff = wait_exponential_jitter(
            multiplier=source.backoff_initial_s,
            max=source.backoff_max_s,
            jitter=source.backoff_initial_s,
        )

    def close(self) -> None:
        self._client.close()

    def safe(self, text: str) -> str:
        """``text`` with credentials and this source's token removed."""
        text = redact_text(text)
        for secret in self.secrets:
            text = text.replace(secret, "[REDACTED]")
        return text

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, RetryableError) and error.retry_after is not None:
            return error.retry_after
        return float(self._backoff(state))

    def fetch(self, request: PageRequest, context: str) -> Any:
        """The decoded JSON body of ``request``; SourceError once retries are spent."""

        def log_retry(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0.0
            logger.warning(
                "%s: %s; retry %d/%d in %.2fs",
                context, error, state.attempt_number, self.source.max_retries, wait,
            )  # fmt: skip

        retrying = Retrying(
            stop=stop_after_attempt(self.source.max_retries + 1),
            wait=self._wait,
            retry=retry_if_exception_type(RetryableError),
            sleep=self._sleep,
            before_sleep=log_retry,
            reraise=True,
        )
        try:
            return retrying(self._fetch_once, request)
        except RetryableError as error:
            attempts = self.source.max_retries + 1
            raise SourceError(
                f"gave up after {attempts} attempt{'s' if attempts > 1 else ''}: {error}"
            ) from None

    def _fetch_once(self, request: PageRequest) -> Any:
        timed_out = RetryableError(f"request timed out after {self.source.timeout_s:g}s")
        deadline = time.monotonic() + self.source.timeout_s
        try:
            with self._client.stream(
                request.method, request.url, params=request.params or None, json=request.json
            ) as response:
                status = response.status_code
                if status == 429 or status >= 500:
                    wait = retry_after_seconds(response.headers.get("retry-after"))
                    if wait is not None and wait > self.source.max_retry_wait_s:
                        raise SourceError(
                            f"HTTP {status}: the source asked to wait {wait:g}s (Retry-After), "
                            f"longer than max_retry_wait_s={self.source.max_retry_wait_s:g}"
                        )
                    raise RetryableError(f"HTTP {status}", retry_after=wait)
                content = _read_before(response, deadline)
        except (httpx.TimeoutException, _DeadlinePassed):
            raise timed_out from None
        except httpx.TransportError as error:
            raise RetryableError(f"connection error ({type(error).__name__})") from None
        except httpx.DecodingError:
            raise RetryableError("unreadable body (bad content encoding)") from None
        if not 200 <= status < 300:
            text = content.decode(response.encoding or "utf-8", errors="replace")
            excerpt = " ".join(text[:_BODY_EXCERPT].split())
            raise SourceError(self.safe(f"HTTP {status}" + (f": {excerpt}" if excerpt else "")))
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError:
            raise RetryableError("unreadable body (not JSON)") from None


class _DeadlinePassed(Exception):
    """The whole body did not arrive within the request's timeout."""


def _read_before(response: httpx.Response, deadline: float) -> bytes:
    """The body of ``response``, or _DeadlinePassed once ``deadline`` (monotonic) passes.

    httpx's read timeout bounds each read from the socket, not the body: a
    server trickling a byte at a time never trips it. So the deadline is
    checked as each chunk arrives, and a watchdog shuts the socket down at the
    deadline so that a read blocked in between ends at once.
    """
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    expired = threading.Event()

    def cut() -> None:
        expired.set()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), cut)
    watchdog.daemon = True
    watchdog.start()
    chunks = []
    try:
        for chunk in response.iter_bytes():
            chunks.append(chunk)
            if time.monotonic() > deadline:
                raise _DeadlinePassed
    except httpx.TransportError:
        if expired.is_set():
            raise _DeadlinePassed from None
        raise
    finally:
        watchdog.cancel()
    if expired.is_set():
        # The socket may be half shut: the connection must not be reused.
        raise _DeadlinePassed
    return b"".join(chunks)
