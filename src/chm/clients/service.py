"""Clients: the consulting customers whose pipelines CHM watches (FR-002, FR-018)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from chm.clients.schemas import ClientCreate, ClientUpdate
from chm.core.changes import apply_changes
from chm.core.errors import Conflict
from chm.core.keyset import Keyset, SortKey, keyset_page
from chm.core.lookup import flush_or_conflict, get_or_404
from chm.core.query import contains_ci
from chm.models import Client
from chm.models.base import name_key

# By name, case-insensitively; the id breaks no tie (names are unique) but
# keeps the order total for the cursor.
KEYSET = Keyset("clients", (SortKey(Client.name_key, str), SortKey(Client.id, int)))


class DuplicateClientName(Conflict):
    title = "Duplicate client name"
    type_slug = "duplicate-name"


def _name_taken(session: Session, name: str, exclude_id: int | None = None) -> bool:
    query = sa.select(Client.id).where(Client.name_key == name_key(name))
    if exclude_id is not None:
        query = query.where(Client.id != exclude_id)
    return session.scalar(query.limit(1)) is not None


def _duplicate_name(name: str) -> DuplicateClientName:
    return DuplicateClientName(f"a client named {name!r} already exists")


def get_client(session: Session, client_id: int) -> Client:
    return get_or_404(session, Client, client_id, "client")


def create_client(session: Session, data: ClientCreate) -> Client:
    if _name_taken(session, data.name):
        raise _duplicate_name(data.name)
    client = Client(name=data.name, is_active=data.is_active)
    session.add(client)
    # Losing a race with a concurrent create: the database kept one row.
    flush_or_conflict(session, _duplicate_name(data.name))
    return client


def update_client(session: Session, client_id: int, data: ClientUpdate) -> Client:
    client = get_client(session, client_id)
    changes = data.model_dump(exclude_unset=True)
    if "name" in changes and _name_taken(session, changes["name"], exclude_id=client.id):
        raise _duplicate_name(changes["name"])
    if apply_changes(client, changes):
        flush_or_conflict(session, _duplicate_name(client.name))
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
    return keyset_page(session, KEYSET, query, cursor=cursor, limit=limit)
