from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from chm.clients import service, summary
from chm.clients.schemas import ClientCreate, ClientOut, ClientSummary, ClientUpdate
from chm.core.deps import ReadSession, ReadSnapshot, WriteSession
from chm.core.ids import ClientID
from chm.core.pagination import DEFAULT_LIMIT, CursorParam, LimitParam, Page
from chm.core.responses import json_bytes_response
from chm.core.schemas import NO_NUL_PATTERN, UTCTimestamp

router = APIRouter(prefix="/clients", tags=["clients"])


@router.post("", status_code=201, response_model=ClientOut)
def create_client(body: ClientCreate, session: WriteSession) -> ClientOut:
    """Create a client; names are unique case-insensitively."""
    return ClientOut.model_validate(service.create_client(session, body))


@router.get("", response_model=Page[ClientOut])
def list_clients(
    session: ReadSession,
    include_inactive: bool = False,
    name_contains: Annotated[str | None, Query(max_length=200, pattern=NO_NUL_PATTERN)] = None,
    limit: LimitParam = DEFAULT_LIMIT,
    cursor: CursorParam = None,
) -> Page[ClientOut]:
    """List clients ordered by name, then id; active only unless `include_inactive`."""
    rows, next_cursor = service.list_clients(
        session,
        include_inactive=include_inactive,
        name_contains=name_contains,
        limit=limit,
        cursor=cursor,
    )
    return Page[ClientOut](
        items=[ClientOut.model_validate(r) for r in rows], next_cursor=next_cursor
    )


@router.get("/{client_id}", response_model=ClientOut)
def get_client(client_id: ClientID, session: ReadSession) -> ClientOut:
    """One client, active or not."""
    return ClientOut.model_validate(service.get_client(session, client_id))


@router.patch("/{client_id}", response_model=ClientOut)
def update_client(client_id: ClientID, body: ClientUpdate, session: WriteSession) -> ClientOut:
    """Rename or (de)activate a client."""
    return ClientOut.model_validate(service.update_client(session, client_id, body))


@router.delete("/{client_id}", response_model=ClientOut)
def disable_client(client_id: ClientID, session: WriteSession) -> ClientOut:
    """Soft disable: the client stays, inactive, with all its history."""
    return ClientOut.model_validate(service.disable_client(session, client_id))


@router.get("/{client_id}/summary", response_model=ClientSummary)
async def client_summary(
    client_id: ClientID,
    conn: ReadSnapshot,
    since: Annotated[UTCTimestamp | None, Query(description="Default: 24 h before until")] = None,
    until: Annotated[UTCTimestamp | None, Query(description="Default: now")] = None,
) -> Response:
    """Status counts and each active pipeline's latest run in a window (default: the last 24 h)."""
    return json_bytes_response(await summary.client_summary(conn, client_id, since, until))
