"""The HTTP floor: a bare ASGI app under the same uvicorn as ``chm serve``.

It answers every GET with the same ready-made JSON body (about the size of a
run), with no routing, validation or database: what uvicorn, the event loop and
wrk cost per request on this machine, whatever the application does.

    .venv/bin/python -m uvicorn bench.floor:app --port 8001 --log-level warning
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

BODY = (
    b'{"id":"4242","pipeline_id":"17","external_run_id":"r4242","status":"success",'
    b'"source_status":"succeeded","started_at":"2026-11-27T23:10:00Z",'
    b'"finished_at":"2026-11-27T23:14:10.500000Z","duration_seconds":250.5,'
    b'"metrics":{"rows":24298},"error_message":null,"source_payload":{"run_id":"r4242",'
    b'"status":"succeeded","attempt":1,"trigger":{"kind":"schedule"}},'
    b'"ingested_at":"2026-11-27T23:14:10.500000Z","created_at":"2026-11-27T23:10:30Z",'
    b'"updated_at":"2026-11-27T23:14:10.500000Z"}'
)
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
