"""Clients: the consulting customers whose pipelines CHM watches (FR-002, FR-018)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from chm.clients.schemas import ClientCreate, ClientUpdate
from chm.core.changes import apply_changes
from chm.core.errors import Conflict, NotFound
from chm.core.pagination import decode_cursor, encode_cursor
from chm.core.query import after_key, contains_ci
from chm.models import Client
from chm.models.base import name_key

CURSOR_KIND = "clients"


class DuplicateClientName(Conflict):
    title = "Duplicate client name"
    type_slug = "duplicate-name"


def _name_taken(session: Session, name: str, exclude_id: int | None = None) -> bool:
    query = sa.select(Client.id).where(Client.name_key == name_key(name))
    if exclude_id is not None:
        query = query.where(Client.id != exclude_id)
    return session.scalar(query.limit(1)) is not None


def _flush_or_conflict(session: Session, name: str) -> None:
    try:
        session.flush()
    except IntegrityError:
        # Lost a race with a concurrent create: the database kept one row.
        raise DuplicateClientName(f"a client named {name!r} already exists") from None


def get_client(session: Session, client_id: int) -> Client:
    client = session.get(Client, client_id)
    if client is None:
        raise NotFound(f"client '{client_id}' not found")
    return client


def create_client(session: Session, data: ClientCreate) -> Client:
    if _name_taken(session, data.name):
        raise DuplicateClientName(f"a client named {data.name!r} already exists")
    client = Client(name=data.name, is_active=data.is_active)
    session.add(client)
    _flush_or_conflict(session, data.name)
    return client


def update_client(session: Session, client_id: int, data: ClientUpdate) -> Client:
    client = get_client(session, client_id)
    changes = data.model_dump(exclude_unset=True)
    if "name" in changes and _name_taken(session, changes["name"], exclude_id=client.id):
        raise DuplicateClientName(f"a client named {changes['name']!r} already exists")
    if apply_changes(client, changes):
        _flush_or_conflict(session, client.name)
    return client


def disable_client(session: Session, client_id: int) -> Client:
    """Soft delete (FR-018): the client and its history stay; the name stays taken."""
    client = get_client(session, client_id)
    apply_changes(client, {"is_active": False})
    session.flush()
    return client


def list_clients(
    session: Session,
    *,
    include_inactive: bool,
    name_contains: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[Client], str | None]:
    query = sa.select(Client)
    if not include_inactive:
        query = query.where(Client.is_active.is_(True))
    if name_contains:
        query = query.where(contains_ci(Client.name_key, name_key(name_contains)))
    if cursor is not None:
        key = decode_cursor(CURSOR_KIND, cursor, (str, int))
        query = query.where(after_key([Client.name_key, Client.id], key))
    rows = list(session.scalars(query.order_by(Client.name_key, Client.id).limit(limit + 1)))
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(CURSOR_KIND, [rows[-1].name_key, rows[-1].id])
    return rows, next_cursor
