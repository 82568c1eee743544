"""What the in-process CLI tests share."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from chm.cli import app
from chm.core.settings import get_settings

Run = Callable[..., Any]


@pytest.fixture
def chm(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Run]:
    """Run `chm ...` in-process against the test database, no sources file."""
    monkeypatch.setenv("CHM_DATABASE_URL", db_url)
    monkeypatch.delenv("CHM_CONFIG", raising=False)
    monkeypatch.delenv("COLUMNS", raising=False)
    get_settings.cache_clear()

    def run(*args: str) -> Any:
        get_settings.cache_clear()
        return CliRunner().invoke(app, list(args))

    yield run
    get_settings.cache_clear()
