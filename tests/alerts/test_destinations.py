"""Named destinations ([[destinations]] in the CHM_CONFIG file) and resolving a
rule's ``kind:target``: every refusal names what to fix, and never a secret."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from chm.alerts.channels import Undeliverable
from chm.alerts.destinations import (
    Destinations,
    DestinationsCache,
    DestinationsError,
    load_destinations,
    parse_destinations,
    resolve,
)
from chm.core.redaction import redact_known
from chm.core.settings import Settings

SOURCES = """
[[sources]]
name = "airflow-prod"
platform = "airflow"
environment = "prod"
base_url = "https://airflow.example.com"
"""

DESTINATIONS = """
[[destinations]]
name = "ops-webhook"
kind = "webhook"
url_env = "OPS_WEBHOOK_URL"
secret_env = "OPS_WEBHOOK_SECRET"

[[destinations]]
name = "ops-slack"
kind = "slack"
url_env = "OPS_SLACK_URL"

[[destinations]]
name = "ops-teams"
kind = "teams"
url_env = "OPS_TEAMS_URL"

[[destinations]]
name = "ops-pd"
kind = "pagerduty"
routing_key_env = "OPS_PD_KEY"
"""

WEBHOOK_URL = "https://hooks.example.com/chm/T0KEN-webhook-path-0123456789"
SLACK_URL = "https://hooks.slack.com/services/T0000/B0000/XXXXXXXXXXXXXXXXXXXXXXXX"
TEAMS_URL = "https://prod.westeurope.logic.azure.com/workflows/1/triggers/manual/paths/invoke?sig=teams-sig-0123456789abc"
ENVIRON = {
    "OPS_WEBHOOK_URL": WEBHOOK_URL,
    "OPS_WEBHOOK_SECRET": "whsec-0123456789",
    "OPS_SLACK_URL": SLACK_URL,
    "OPS_TEAMS_URL": TEAMS_URL,
    "OPS_PD_KEY": "R0UT1NGKEY0123456789abcdefABCDEF",
}
SECRETS = (*ENVIRON.values(), "T0KEN-webhook-path-0123456789", "teams-sig-0123456789abc")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "chm.toml"
    path.write_text(text)
    return path


@pytest.fixture
def destinations(tmp_path: Path) -> Destinations:
    return load_destinations(write(tmp_path, SOURCES + DESTINATIONS))


def refused(destination: str, destinations: Destinations | None, **settings: Any) -> str:
    with pytest.raises(Undeliverable) as caught:
        resolve(destination, destinations, Settings(**settings), ENVIRON)
    reason = str(caught.value)
    for secret in SECRETS:
        assert secret not in reason
    return reason


# --- the file -----------------------------------------------------------------------------


def test_destinations_share_the_sources_file(destinations: Destinations) -> None:
    assert [(d.name, d.kind) for d in destinations.all] == [
        ("ops-webhook", "webhook"),
        ("ops-slack", "slack"),
        ("ops-teams", "teams"),
        ("ops-pd", "pagerduty"),
    ]
    webhook = destinations.get("ops-webhook")
    assert webhook is not None
    assert (webhook.url_env, webhook.secret_env) == ("OPS_WEBHOOK_URL", "OPS_WEBHOOK_SECRET")


def test_no_config_file_means_no_named_destinations() -> None:
    assert len(load_destinations(None)) == 0


def test_a_file_without_destinations_has_none(tmp_path: Path) -> None:
    assert len(load_destinations(write(tmp_path, SOURCES))) == 0


def test_a_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(
        DestinationsError, match=r"chm\.toml: the config file \(CHM_CONFIG\) does not exist"
    ):
        load_destinations(tmp_path / "chm.toml")


def test_invalid_toml_is_an_error_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(DestinationsError, match=r"chm\.toml: not valid TOML"):
        load_destinations(write(tmp_path, "[[destinations]\nname = "))


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            'name = "ops"\nkind = "sms"\nurl_env = "X"',
            "destination 'ops' (destinations[0]): field 'kind': unknown kind 'sms'; the kinds are "
            "email, pagerduty, slack, teams, webhook",
        ),
        (
            'name = "ops"\nkind = "email"',
            "destination 'ops' (destinations[0]): field 'kind': kind 'email' takes no named "
            "destination",
        ),
        (
            'name = "ops"\nkind = "webhook"',
            "destination 'ops' (destinations[0]): field 'url_env': required for a webhook destination",
        ),
        (
            'name = "ops"\nkind = "pagerduty"',
            "destination 'ops' (destinations[0]): field 'routing_key_env': required for a "
            "pagerduty destination",
        ),
        (
            'name = "ops"\nkind = "slack"\nurl_env = "X"\nsecret_env = "Y"',
            "destination 'ops' (destinations[0]): field 'secret_env': a slack destination has no "
            "secret_env (it has url_env)",
        ),
        (
            'name = "ops"\nkind = "webhook"\nurl_env = "1-NOT-A-NAME"',
            "destination 'ops' (destinations[0]): field 'url_env': String should match pattern",
        ),
        (
            'name = "ops"\nkind = "webhook"\nurl_env = "X"\nurl = "https://inline.example.com"',
            "destination 'ops' (destinations[0]): field 'url': Extra inputs are not permitted",
        ),
        (
            'name = "#ops"\nkind = "slack"\nurl_env = "X"',
            "destination '#ops' (destinations[0]): field 'name': String should match pattern",
        ),
        ('kind = "webhook"\nurl_env = "X"', "destinations[0]: field 'name': Field required"),
    ],
)
def test_an_invalid_entry_names_the_file_the_destination_and_the_field(
    tmp_path: Path, entry: str, message: str
) -> None:
    path = write(tmp_path, SOURCES + "\n[[destinations]]\n" + entry + "\n")
    with pytest.raises(DestinationsError) as caught:
        load_destinations(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)


def test_names_are_unique_across_kinds(tmp_path: Path) -> None:
    text = DESTINATIONS + '\n[[destinations]]\nname = "ops-slack"\nkind = "teams"\nurl_env = "T"\n'
    with pytest.raises(DestinationsError) as caught:
        load_destinations(write(tmp_path, text))
    assert (
        "destination 'ops-slack' (destinations[4]): field 'name': duplicates destinations[1]"
        in str(caught.value)
    )


def test_every_problem_of_the_file_is_reported_at_once() -> None:
    with pytest.raises(DestinationsError) as caught:
        parse_destinations(
            [
                {"name": "a", "kind": "webhook"},
                {"name": "b", "kind": "teams", "routing_key_env": "R"},
            ],
            "chm.toml",
        )
    text = str(caught.value)
    assert "destination 'a' (destinations[0]): field 'url_env'" in text
    assert "destination 'b' (destinations[1]): field 'url_env'" in text
    assert "destination 'b' (destinations[1]): field 'routing_key_env'" in text


def test_destinations_must_be_an_array_of_tables() -> None:
    with pytest.raises(DestinationsError, match="field 'destinations': must be an array of tables"):
        parse_destinations({"name": "x"}, "chm.toml")
    with pytest.raises(DestinationsError, match=r"destinations\[0\]: must be a table"):
        parse_destinations(["webhook:x"], "chm.toml")


# --- the cache ----------------------------------------------------------------------------------


def test_the_cache_parses_again_only_when_the_content_changes(tmp_path: Path) -> None:
    path = write(tmp_path, DESTINATIONS)
    cache = DestinationsCache()
    first = cache.load(path)
    assert cache.load(path) is first
    # Same size, same second: a change the file's times alone could miss.
    mtime = path.stat().st_mtime_ns
    path.write_text(DESTINATIONS.replace("ops-pd", "ops-PD"))
    os.utime(path, ns=(mtime, mtime))
    changed = cache.load(path)
    assert changed is not first
    assert changed.get("ops-PD") is not None


def test_the_cache_never_keeps_an_invalid_file(tmp_path: Path) -> None:
    path = write(tmp_path, DESTINATIONS)
    cache = DestinationsCache()
    cache.load(path)
    path.write_text('[[destinations]]\nname = "x"\nkind = "sms"\n')
    for _ in range(2):
        with pytest.raises(DestinationsError, match="unknown kind 'sms'"):
            cache.load(path)
    path.write_text(DESTINATIONS)
    assert cache.load(path).get("ops-webhook") is not None
    assert len(cache.load(None)) == 0


# --- resolving ----------------------------------------------------------------------------------


def test_named_destinations_resolve_with_their_secrets_from_the_environment(
    destinations: Destinations,
) -> None:
    webhook = resolve("webhook:ops-webhook", destinations, Settings(), ENVIRON)
    assert (webhook.kind, webhook.name, webhook.url, webhook.secret) == (
        "webhook",
        "ops-webhook",
        WEBHOOK_URL,
        "whsec-0123456789",
    )
    slack = resolve("slack:ops-slack", destinations, Settings(), ENVIRON)
    assert (slack.url, slack.token) == (SLACK_URL, None)
    teams = resolve("teams:ops-teams", destinations, Settings(), ENVIRON)
    assert teams.url == TEAMS_URL
    pagerduty = resolve("pagerduty:ops-pd", destinations, Settings(), ENVIRON)
    assert pagerduty.routing_key == ENVIRON["OPS_PD_KEY"]


def test_a_resolved_destination_hides_its_secrets_and_the_log_filter_knows_them(
    destinations: Destinations,
) -> None:
    teams = resolve("teams:ops-teams", destinations, Settings(), ENVIRON)
    shown = repr(teams)
    assert "ops-teams" in shown
    assert TEAMS_URL not in shown and "teams-sig-0123456789abc" not in shown
    assert "teams-sig-0123456789abc" in teams.secrets
    assert "teams-sig-0123456789abc" not in redact_known(f"posting to {TEAMS_URL}")


def test_slack_channel_resolves_with_the_bot_token() -> None:
    slack = resolve("slack:#ops", None, Settings(slack_bot_token=SecretStr("xoxb-1-2-abc")), {})
    assert (slack.kind, slack.target, slack.token, slack.url) == (
        "slack",
        "#ops",
        "xoxb-1-2-abc",
        None,
    )


def test_email_resolves_with_the_smtp_server_sender_and_password() -> None:
    settings = Settings(
        smtp_url=SecretStr("smtps://mailer@smtp.example.com:465"),
        smtp_password=SecretStr("pa55"),
        smtp_from="chm@example.com",
    )
    email = resolve("email:ops@example.com", None, settings, {})
    assert (email.target, email.url, email.secret, email.extra) == (
        "ops@example.com",
        "smtps://mailer@smtp.example.com:465",
        "pa55",
        {"from": "chm@example.com"},
    )


@pytest.mark.parametrize(
    "destination", ["webhook", "webhook:", ":ops", "Webhook:ops", "web hook:ops"]
)
def test_a_string_that_is_not_kind_colon_target_is_undeliverable(
    destinations: Destinations, destination: str
) -> None:
    assert "is not 'kind:target'" in refused(destination, destinations)


def test_a_malformed_destination_holding_a_url_is_shown_redacted() -> None:
    reason = refused("webhook https://user:hunter2secret@hooks.example.com/x", None)
    assert "is not 'kind:target'" in reason
    assert "https://[REDACTED]@hooks.example.com/x" in reason
    assert "hunter2secret" not in reason


def test_an_unknown_kind_is_undeliverable(destinations: Destinations) -> None:
    assert refused("sms:+4912345", destinations) == (
        "unknown destination kind 'sms'; the kinds are email, pagerduty, slack, teams, webhook"
    )


def test_slack_channel_without_a_bot_token_is_undeliverable() -> None:
    assert refused("slack:#ops", None) == (
        "slack:#ops posts with a bot token: CHM_SLACK_BOT_TOKEN is not set"
    )


def test_slack_channel_name_with_blanks_is_undeliverable() -> None:
    reason = refused("slack:#ops team", None, slack_bot_token=SecretStr("xoxb-1"))
    assert "is not a channel name" in reason


def test_an_unknown_name_is_undeliverable(destinations: Destinations) -> None:
    assert refused("webhook:billing", destinations) == (
        "unknown webhook destination 'billing': no [[destinations]] entry of the CHM_CONFIG "
        "file has that name"
    )
    assert refused("webhook:billing", None) == (
        "unknown webhook destination 'billing': the CHM_CONFIG file has no [[destinations]]"
    )


def test_a_name_of_another_kind_is_undeliverable(destinations: Destinations) -> None:
    assert refused("teams:ops-slack", destinations) == (
        "destination 'ops-slack' is a slack destination, not teams"
    )


def test_a_url_put_in_a_rule_is_never_echoed(destinations: Destinations) -> None:
    reason = refused(f"webhook:{WEBHOOK_URL}", destinations)
    assert "is not a destination name" in reason


@pytest.mark.parametrize(
    ("destination", "unset", "field"),
    [
        ("webhook:ops-webhook", "OPS_WEBHOOK_URL", "url_env"),
        ("webhook:ops-webhook", "OPS_WEBHOOK_SECRET", "secret_env"),
        ("slack:ops-slack", "OPS_SLACK_URL", "url_env"),
        ("teams:ops-teams", "OPS_TEAMS_URL", "url_env"),
        ("pagerduty:ops-pd", "OPS_PD_KEY", "routing_key_env"),
    ],
)
def test_a_variable_not_set_is_undeliverable_by_its_name(
    destinations: Destinations, destination: str, unset: str, field: str
) -> None:
    environ = {k: v for k, v in ENVIRON.items() if k != unset}
    with pytest.raises(Undeliverable) as caught:
        resolve(destination, destinations, Settings(), environ)
    name = destination.split(":")[1]
    assert str(caught.value) == (
        f"destination {name!r}: environment variable {unset} ({field}) is not set"
    )


def test_a_variable_that_holds_no_http_url_is_undeliverable_without_its_value(
    destinations: Destinations,
) -> None:
    environ = {**ENVIRON, "OPS_WEBHOOK_URL": "ftp://secret-host-0123456789/x"}
    with pytest.raises(Undeliverable) as caught:
        resolve("webhook:ops-webhook", destinations, Settings(), environ)
    assert str(caught.value) == (
        "destination 'ops-webhook': environment variable OPS_WEBHOOK_URL (url_env) does not hold "
        "an http:// or https:// URL"
    )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"smtp_from": "chm@example.com"}, "email needs an SMTP server: CHM_SMTP_URL is not set"),
        (
            {"smtp_url": SecretStr("smtp://smtp.example.com")},
            "email needs a sender: CHM_SMTP_FROM is not set",
        ),
        (
            {"smtp_url": SecretStr("smtp://smtp.example.com"), "smtp_from": "not an address"},
            "CHM_SMTP_FROM is not an address (local@domain)",
        ),
        (
            {"smtp_url": SecretStr("http://smtp.example.com"), "smtp_from": "chm@example.com"},
            "CHM_SMTP_URL must be smtp://[user@]host[:port] or smtps://[user@]host[:port]",
        ),
        (
            {
                "smtp_url": SecretStr("smtp://mailer@smtp.example.com"),
                "smtp_from": "chm@example.com",
            },
            "CHM_SMTP_URL names a user but CHM_SMTP_PASSWORD is not set",
        ),
        (
            {
                "smtp_url": SecretStr("smtp://smtp.example.com"),
                "smtp_from": "chm@example.com",
                "smtp_password": SecretStr("pa55-0123456789"),
            },
            "CHM_SMTP_PASSWORD is set but CHM_SMTP_URL names no user (smtp://user@host:port)",
        ),
    ],
)
def test_email_without_a_usable_server_is_undeliverable(
    settings: dict[str, Any], message: str
) -> None:
    reason = refused("email:ops@example.com", None, **settings)
    assert reason == message
    assert "pa55-0123456789" not in reason


@pytest.mark.parametrize(
    "address",
    [
        "ops",
        "ops@",
        "@example.com",
        "ops@example.com\r\nBcc: all@example.com",
        "a b@example.com",
        "ops@@x.com",
        "ops@.example.com",
    ],
)
def test_a_malformed_address_is_undeliverable(address: str) -> None:
    reason = refused(
        f"email:{address}",
        None,
        smtp_url=SecretStr("smtp://smtp.example.com"),
        smtp_from="chm@example.com",
    )
    assert reason == "email target is not an address (local@domain, e.g. email:ops@example.com)"
