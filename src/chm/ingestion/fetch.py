"""One source's HTTP: timeouts, retries with backoff and jitter, Retry-After (FR-015).

Each try is bounded as a whole by the source's ``timeout_s``: connect,
request, headers and body together (``chm.ingestion.deadline``), on top of
httpx's own timeout for each connect, read and write; running out is a
timeout, retried like any other.

Connection errors, timeouts, 429, 5xx and unreadable bodies are retried up to
``max_retries`` times after the first try, with exponential backoff and
jitter (tenacity); a ``Retry-After`` header, in seconds or as an HTTP date,
replaces the backoff for that wait, and one longer than ``max_retry_wait_s``
fails the pipeline at once instead of sleeping. Any other non-2xx answer
fails the pipeline at once. Credentials go only to this source; redirects
are never followed, so they cannot be carried to another host.

Rate limits: a 403 or 429 that says the rate limit is spent
(``x-ratelimit-remaining: 0`` with ``x-ratelimit-reset``, UTC epoch
seconds, as GitHub sends) waits until the reset, under the same
``max_retry_wait_s`` cap; a 403 with ``Retry-After`` waits that long. Any
other 403 is a refusal and fails the pipeline at once.

Authentication comes from the source (``chm.ingestion.credentials``): fixed
headers, or a token exchange done before the first request and once more
when the source answers 401 (an expired token).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import httpx
import orjson
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from chm.core.redaction import Redactor, register_secret
from chm.core.timeutil import retry_after_seconds
from chm.ingestion.connectors.base import PageRequest
from chm.ingestion.credentials import Credentials
from chm.ingestion.deadline import deadline, deadline_mounts, deadline_transport
from chm.ingestion.sources import SourceBase

logger = logging.getLogger("chm.ingestion")

_SECONDS = re.compile(r"^\d+(\.\d+)?$")
_BODY_EXCERPT = 200


class SourceError(Exception):
    """The source cannot give this pipeline's runs now; the message is safe to show."""


class SourceUnavailable(SourceError):
    """The source itself failed, not one pipeline's request: unreachable or
    failing after every retry, throttling longer than CHM waits, or refusing
    CHM's credentials. Every pipeline of the source would fail the same way
    now, so the worker backs the source off (docs/worker.md)."""


class RetryableError(Exception):
    """A failure worth another try, possibly after the wait the source asked for."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


def rate_limit_wait(headers: httpx.Headers, now: float | None = None) -> float | None:
    """Seconds until a spent rate limit resets (``x-ratelimit-remaining: 0`` and
    ``x-ratelimit-reset`` in UTC epoch seconds), else None."""
    if headers.get("x-ratelimit-remaining", "").strip() != "0":
        return None
    reset = headers.get("x-ratelimit-reset", "").strip()
    if not _SECONDS.match(reset):
        return None
    return max(0.0, float(reset) - (time.time() if now is None else now))


class Answer(NamedTuple):
    """A source's decoded JSON body and its response headers (lower-case names)."""

    body: Any
    headers: dict[str, str]


class _Unauthorized(SourceUnavailable):
    """HTTP 401: with a token exchange, the token may have expired."""


class SourceClient:
    """Fetches the pages of one source; one instance (and connection pool) per source."""

    def __init__(
        self,
        source: SourceBase,
        credentials: Credentials,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.source = source
        self.credentials = credentials
        # Every secret value, for removal from anything this source sends back.
        self.redactor = Redactor(credentials.secrets)
        for secret in self.redactor.secrets:
            register_secret(secret)  # no log line of this process may show it
        self._auth: dict[str, str] = dict(credentials.headers)
        self._client = httpx.Client(
            headers={"Accept": "application/json", "User-Agent": "chm-ingest"},
            timeout=httpx.Timeout(source.timeout_s),
            follow_redirects=False,
            transport=deadline_transport(),
            mounts=deadline_mounts(),
        )
        self._sleep = sleep
        self._backoff = wait_exponential_jitter(
            multiplier=source.backoff_initial_s,
            max=source.backoff_max_s,
            jitter=source.backoff_initial_s,
        )

    def close(self) -> None:
        self._client.close()

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, RetryableError) and error.retry_after is not None:
            return error.retry_after
        return float(self._backoff(state))

    def fetch(self, request: PageRequest, context: str) -> Answer:
        """The answer to ``request``; SourceError once retries are spent."""
        exchange = self.credentials.exchange
        if exchange is not None and not self._auth:
            self._exchange_token(context)
        try:
            return self._retrying(request, context)
        except _Unauthorized:
            if exchange is None:
                raise
            logger.info("%s: HTTP 401; asking for a new token", context)
            self._exchange_token(context)
            return self._retrying(request, context)

    def _exchange_token(self, context: str) -> None:
        exchange = self.credentials.exchange
        assert exchange is not None
        request = PageRequest("POST", exchange.url, json=dict(exchange.body))
        try:
            answer = self._retrying(request, f"{context} (login)", authenticated=False)
        except SourceError as error:
            raise SourceUnavailable(f"could not log in (POST {exchange.url}): {error}") from None
        token = answer.body.get(exchange.token_key) if isinstance(answer.body, dict) else None
        if not isinstance(token, str) or not token:
            raise SourceError(f"the login (POST {exchange.url}) answered no {exchange.token_key!r}")
        self.redactor = self.redactor.with_secret(token)
        register_secret(token)
        self._auth = {"Authorization": f"Bearer {token}"}

    def _retrying(self, request: PageRequest, context: str, authenticated: bool = True) -> Answer:

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
            return retrying(self._fetch_once, request, authenticated)
        except RetryableError as error:
            attempts = self.source.max_retries + 1
            raise SourceUnavailable(
                f"gave up after {attempts} attempt{'s' if attempts > 1 else ''}: {error}"
            ) from None

    def _fetch_once(self, request: PageRequest, authenticated: bool = True) -> Answer:
        timed_out = RetryableError(f"request timed out after {self.source.timeout_s:g}s")
        headers = {**request.headers, **(self._auth if authenticated else {})}
        try:
            # One deadline for the whole exchange: a server trickling its
            # headers or its body a byte at a time trips it too.
            with (
                deadline(self.source.timeout_s),
                self._client.stream(
                    request.method,
                    request.url,
                    params=request.params or None,
                    json=request.json,
                    headers=headers,
                ) as response,
            ):
                status = response.status_code
                self._raise_if_throttled(status, response.headers)
                content = response.read()
        except httpx.TimeoutException:
            raise timed_out from None
        except httpx.TransportError as error:
            raise RetryableError(f"connection error ({type(error).__name__})") from None
        except httpx.DecodingError:
            raise RetryableError("unreadable body (bad content encoding)") from None
        if not 200 <= status < 300:
            text = content.decode(response.encoding or "utf-8", errors="replace")
            excerpt = " ".join(text[:_BODY_EXCERPT].split())
            message = self.redactor.text(f"HTTP {status}" + (f": {excerpt}" if excerpt else ""))
            raise (_Unauthorized if status == 401 else SourceError)(message)
        try:
            body = orjson.loads(content)
        except orjson.JSONDecodeError:
            raise RetryableError("unreadable body (not JSON)") from None
        return Answer(body, {name.lower(): value for name, value in response.headers.items()})

    def _raise_if_throttled(self, status: int, headers: httpx.Headers) -> None:
        """RetryableError for 429, 5xx and a rate-limit 403; SourceError when the
        wait asked for is longer than ``max_retry_wait_s``."""
        retry_after = retry_after_seconds(headers.get("retry-after"))
        reset = rate_limit_wait(headers) if status in (403, 429) else None
        if status == 403 and retry_after is None and reset is None:
            return  # a refusal, not a rate limit
        if not (status in (403, 429) or status >= 500):
            return
        wait, why = (
            (retry_after, "Retry-After") if retry_after is not None else (reset, "rate limit reset")
        )
        if wait is not None and wait > self.source.max_retry_wait_s:
            raise SourceUnavailable(
                f"HTTP {status}: the source asked to wait {wait:g}s ({why}), "
                f"longer than max_retry_wait_s={self.source.max_retry_wait_s:g}"
            )
        reason = f"HTTP {status}" + (" (rate limit spent)" if reset is not None else "")
        raise RetryableError(reason, retry_after=wait)
