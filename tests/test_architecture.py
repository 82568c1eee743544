"""The import rules of docs/architecture.md hold: the contracts in pyproject.toml
([tool.importlinter]), checked by import-linter over the whole package graph."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from importlinter.cli import lint_imports

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_the_contracts_cover_the_rules_of_the_architecture() -> None:
    contracts = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]["contracts"]
    sources = {module for contract in contracts for module in contract.get("source_modules", ())}
    assert {"chm.core", "chm.ingestion.connectors"} <= sources
    assert any(contract["type"] == "layers" for contract in contracts)


def test_every_import_contract_is_kept(capsys: pytest.CaptureFixture[str]) -> None:
    exit_code = lint_imports(config_filename=str(PYPROJECT), no_cache=True, no_logo=True)
    report = capsys.readouterr().out
    assert exit_code == 0, report
