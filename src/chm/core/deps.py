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


ReadSession = Annotated[Session, Depends(_read_session)]
WriteSession = Annotated[Session, Depends(_write_session)]
