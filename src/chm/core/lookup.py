"""Looking a row up by id (a 404 when it is not there) and writing it (a 409
when the database refuses it as a duplicate), the same way in every domain.

Core knows no table: the model, the select and the error come from the caller.
"""

from __future__ import annotations

from typing import Any, TypeVar, TypeVarTuple

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import Session

from chm.core.errors import Conflict, NotFound

M = TypeVar("M")
Ts = TypeVarTuple("Ts")


def not_found(what: str, ident: Any) -> NotFound:
    """``<what> '<id>' not found``, the one wording of a 404 for an id."""
    return NotFound(f"{what} '{ident}' not found")


def get_or_404(
    session: Session, model: type[M], ident: int, what: str, *, for_update: bool = False
) -> M:
    """The ``model`` row with primary key ``ident`` (locked until the transaction
    ends when ``for_update``); a 404 naming ``what`` when none."""
    found = session.get(model, ident, with_for_update=for_update or None)
    if found is None:
        raise not_found(what, ident)
    return found


async def first_or_404(
    conn: AsyncConnection, query: sa.Select[*Ts], what: str, ident: int
) -> sa.Row[*Ts]:
    """The first row of ``query`` (a lookup of ``what`` by ``ident``); a 404 when none."""
    row = (await conn.execute(query)).first()
    if row is None:
        raise not_found(what, ident)
    return row


def flush_or_conflict(session: Session, conflict: Conflict) -> None:
    """Flush; a row the database refuses (a concurrent writer took the name or
    key between the service's friendly check and this flush) is ``conflict``."""
    try:
        session.flush()
    except IntegrityError:
        raise conflict from None
