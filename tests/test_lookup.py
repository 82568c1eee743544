"""The one get-or-404 and flush-or-conflict (chm.core.lookup), on both databases."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from chm.core.errors import Conflict, NotFound
from chm.core.lookup import flush_or_conflict, get_or_404
from chm.models import Client


class TakenName(Conflict):
    title = "Taken"


def test_get_or_404_returns_the_row_or_names_what_is_missing(engine: Engine) -> None:
    with Session(engine) as session:
        client = Client(name="Acme")
        session.add(client)
        session.flush()
        assert get_or_404(session, Client, client.id, "client") is client
        with pytest.raises(NotFound) as error:
            get_or_404(session, Client, client.id + 1, "client")
        assert error.value.detail == f"client '{client.id + 1}' not found"


def test_a_row_the_database_refuses_is_the_given_conflict(engine: Engine) -> None:
    with Session(engine) as session:
        session.add(Client(name="Acme"))
        flush_or_conflict(session, TakenName("first"))
        session.add(Client(name="ACME"))  # the same name_key: the unique constraint refuses it
        with pytest.raises(TakenName) as error:
            flush_or_conflict(session, TakenName("a client named 'ACME' already exists"))
        assert error.value.detail == "a client named 'ACME' already exists"
        assert error.value.__cause__ is None
