"""The sources file (CHM_CONFIG): validated at load, errors naming file, source and field."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from ingestion_fakes import toml_text

from chm.ingestion.config import ConfigError, load_sources
from chm.ingestion.connectors.adf import AdfSource
from chm.ingestion.connectors.databricks import DatabricksSource
from chm.ingestion.connectors.generic import GenericSource
from chm.ingestion.sources import TokenMissing
from factories import make_client, make_pipeline

GENERIC = {"name": "acme-generic-prod", "platform": "generic", "environment": "prod",
           "client": "Acme", "base_url": "http://127.0.0.1:9100", "token_env": "ACME_FEED_TOKEN",
           "timeout_s": 10, "max_retries": 5}  # fmt: skip
DATABRICKS = {"name": "dbx", "platform": "databricks", "environment": "prod",
              "base_url": "https://adb-1.azuredatabricks.net", "api_version": "2.1"}  # fmt: skip
ADF = {"name": "adf", "platform": "adf", "environment": "staging",
       "base_url": "https://management.azure.com", "subscription_id": "0000-1111",
       "resource_group": "rg-data", "factory_name": "acme-adf"}  # fmt: skip


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sources.toml"
    path.write_text(text)
    return path


def error_for(tmp_path: Path, *entries: dict[str, object]) -> str:
    path = write(tmp_path, toml_text(*entries))
    with pytest.raises(ConfigError) as caught:
        load_sources(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    return message.removeprefix(f"{path}: ")


def test_the_contract_example_and_every_platform_load(tmp_path) -> None:
    loaded = load_sources(write(tmp_path, toml_text(GENERIC, DATABRICKS, ADF)))
    generic, databricks, adf = loaded.all
    assert isinstance(generic, GenericSource) and generic.base == "http://127.0.0.1:9100"
    assert (generic.timeout_s, generic.max_retries, generic.max_retry_wait_s) == (10, 5, 60)
    assert isinstance(databricks, DatabricksSource) and databricks.api_version == "2.1"
    assert isinstance(adf, AdfSource) and adf.lookback_hours == 72
    assert loaded.for_pipeline("generic", "prod", "ACME ") is generic
    assert loaded.for_pipeline("generic", "prod", "Beta") is None
    assert loaded.for_pipeline("adf", "staging", "Anyone") is adf


def test_an_empty_file_has_no_sources(tmp_path) -> None:
    assert load_sources(write(tmp_path, "")).all == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"timeout_s": 0}, "source 'acme-generic-prod' (sources[0]): field 'timeout_s': Input should be greater than 0"),
        ({"platform": "airflw"}, "field 'platform': unknown platform 'airflw'"),
        ({"base_url": "ftp://x"}, "field 'base_url': URL scheme should be 'http' or 'https'"),
        ({"token_env": "NOT A VAR"}, "field 'token_env'"),
        ({"environment": "Prod"}, "field 'environment'"),
        ({"max_retries": -1}, "field 'max_retries'"),
        ({"colour": "blue"}, "field 'colour': Extra inputs are not permitted"),
        ({"api_version": "2.1"}, "field 'api_version': Extra inputs are not permitted"),
        ({"backoff_initial_s": 5, "backoff_max_s": 1}, "backoff_max_s must not be below backoff_initial_s"),
    ],
)  # fmt: skip
def test_invalid_fields_are_named_with_their_source(tmp_path, change, expected) -> None:
    assert expected in error_for(tmp_path, GENERIC | change)


def test_a_source_without_a_name_is_named_by_its_position(tmp_path) -> None:
    entry = {k: v for k, v in GENERIC.items() if k != "name"}
    assert error_for(tmp_path, DATABRICKS, entry) == "sources[1]: field 'name': Field required"


def test_adf_sources_need_their_factory(tmp_path) -> None:
    entry = {k: v for k, v in ADF.items() if k != "factory_name"}
    assert (
        error_for(tmp_path, entry)
        == "source 'adf' (sources[0]): field 'factory_name': Field required"
    )


def test_duplicate_names_and_ambiguous_sources_are_refused(tmp_path) -> None:
    message = error_for(tmp_path, GENERIC, GENERIC | {"client": "ACME"})
    assert "source 'acme-generic-prod' (sources[1]): field 'name': duplicates sources[0]" in message
    assert "field 'client': source 'acme-generic-prod' already serves" in message


def test_unreadable_files_say_which_file_and_why(tmp_path) -> None:
    with pytest.raises(ConfigError, match="CHM_CONFIG is not set"):
        load_sources(None)
    with pytest.raises(ConfigError, match="does not exist"):
        load_sources(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match=r"sources.toml: not valid TOML: .*line 1"):
        load_sources(write(tmp_path, "[[sources]\n"))
    with pytest.raises(ConfigError, match="the file: field 'source': Extra inputs"):
        load_sources(write(tmp_path, '[[source]]\nname = "x"\n'))


def test_the_token_comes_from_the_named_variable_only_when_asked(tmp_path) -> None:
    generic = load_sources(write(tmp_path, toml_text(GENERIC))).all[0]
    with pytest.raises(TokenMissing, match="environment variable ACME_FEED_TOKEN"):
        generic.token({})
    token = generic.token({"ACME_FEED_TOKEN": "s3cret-value"})
    assert token is not None and token.get_secret_value() == "s3cret-value"
    assert "s3cret-value" not in repr(token) + str(token)
    assert load_sources(write(tmp_path, toml_text(DATABRICKS))).all[0].token({}) is None


def chm_ingest(env_extra: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHM_")} | env_extra
    return subprocess.run(
        [sys.executable, "-m", "chm.cli", "ingest", *args],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_chm_ingest_exits_2_on_bad_configuration_or_usage(api, db_url, tmp_path) -> None:
    bad = write(tmp_path, toml_text(GENERIC | {"max_retries": "many"}))
    result = chm_ingest({"CHM_CONFIG": str(bad), "CHM_DATABASE_URL": db_url}, "--json")
    assert result.returncode == 2
    assert result.stdout == ""
    assert f"{bad}: source 'acme-generic-prod' (sources[0]): field 'max_retries'" in result.stderr
    unset = chm_ingest({"CHM_DATABASE_URL": db_url})
    assert unset.returncode == 2 and "CHM_CONFIG is not set" in unset.stderr

    client = make_client(api)
    other = make_pipeline(api, make_client(api), platform="generic", external_id="x")
    env = {"CHM_CONFIG": str(write(tmp_path, toml_text(GENERIC))), "CHM_DATABASE_URL": db_url}
    unknown = chm_ingest(env, "--client", "424242")
    assert unknown.returncode == 2 and "--client: client '424242' does not exist" in unknown.stderr
    mismatch = chm_ingest(env, "--client", client["id"], "--pipeline", other["id"], "--json")
    assert mismatch.returncode == 2 and "does not belong to client" in mismatch.stderr
    nothing = chm_ingest(env, "--client", client["id"], "--json")
    assert nothing.returncode == 0, nothing.stderr
    assert orjson.loads(nothing.stdout) == {"pipelines": 0, "pages": 0, "runs_created": 0,
                                            "runs_updated": 0, "runs_unchanged": 0,
                                            "runs_skipped": 0, "errors": []}  # fmt: skip
