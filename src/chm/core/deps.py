"""Request dependencies: database sessions (the one transaction boundary)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from chm.core.db import session_scope


def _read_session(request: Request) -> Iterator[Session]:
    yield from session_scope(request.app.state.read_sessions)


def _write_session(request: Request) -> Iterator[Session]:
    yield from session_scope(request.app.state.write_sessions)


# scope="function": the commit happens before the response is sent, so a
# failed commit is answered as an error, never acknowledged as a success.
ReadSession = Annotated[Session, Depends(_read_session, scope="function")]
WriteSession = Annotated[Session, Depends(_write_session, scope="function")]
