"""One deadline for a whole HTTP exchange: connect, request, headers and body.

httpx's timeouts bound each network operation, not the exchange: a server
that sends its status line and headers, or its body, a byte at a time
never lets one read wait long enough to trip them. So every socket
operation of a request made under ``deadline(seconds)`` waits at most what
is left of those seconds, and one started after the deadline fails at once,
as the httpcore timeout of its kind (``ReadTimeout`` while waiting for the
answer, ``ConnectTimeout`` while connecting, ``WriteTimeout`` while
sending): httpx reports it as its own ``TimeoutException``.

The bound lives in the network streams httpcore reads and writes through
(``_DeadlineBackend``), where every socket wait of every phase passes, on a
new connection or a reused one. The deadline itself is a context variable:
each thread, and each request in it, has its own. Name resolution is the
system resolver's (``getaddrinfo`` cannot be interrupted) and is left out.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import httpcore
import httpx
from httpx._utils import get_environment_proxies  # httpx's reading of the proxy variables

_deadline: ContextVar[float | None] = ContextVar("chm_http_deadline", default=None)


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Bound every socket wait of the requests made inside by ``seconds`` from now."""
    token = _deadline.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


def _bounded(timeout: float | None, expired: type[httpcore.TimeoutException]) -> float | None:
    """``timeout`` cut to what is left of the deadline; ``expired`` once none is left."""
    at = _deadline.get()
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise expired("the request's deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A network stream whose every wait ends by the current deadline."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _bounded(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _bounded(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, bounded))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's network backend, its streams wrapped in ``_DeadlineStream``."""

    def __init__(self, backend: httpcore.NetworkBackend) -> None:
        self._backend = backend

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        stream = self._backend.connect_tcp(host, port, bounded, local_address, socket_options)
        return _DeadlineStream(stream)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._backend.connect_unix_socket(path, bounded, socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def deadline_transport(proxy: str | None = None) -> httpx.HTTPTransport:
    """httpx's own transport (through ``proxy`` when given), its connection pool
    reading through ``_DeadlineBackend``.

    httpx takes no network backend, but the httpcore pool it wraps does:
    the backend is swapped in place, and a pool of another shape (a new
    httpx or httpcore) fails here, at start-up, rather than leaving the
    exchange unbounded without a word.
    """
    transport = httpx.HTTPTransport(proxy=proxy)
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if not isinstance(pool, httpcore.ConnectionPool) or not isinstance(
        backend, httpcore.NetworkBackend
    ):
        raise RuntimeError("httpx's transport has no httpcore pool with a network backend")
    pool._network_backend = _DeadlineBackend(backend)
    return transport


def deadline_mounts() -> dict[str, httpx.BaseTransport | None]:
    """The proxies of the environment (``HTTP_PROXY``, ``HTTPS_PROXY``,
    ``ALL_PROXY``, ``NO_PROXY``), each behind a deadline transport, as
    ``httpx.Client(mounts=...)`` takes them. httpx reads the environment
    itself only when it builds its own transport: a client given one (ours)
    must be given the proxies too, by httpx's own reading of the environment
    so that ``NO_PROXY`` means exactly what it means to httpx. ``None``
    (a ``NO_PROXY`` host) sends that traffic through the client's transport."""
    return {
        pattern: None if url is None else deadline_transport(proxy=url)
        for pattern, url in get_environment_proxies().items()
    }
