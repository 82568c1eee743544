"""Credential redaction and the caps of what CHM stores of a run (SE-002, issue 10 §7).

Redaction runs in time linear in the text (``bench/redaction.py`` times it on
adversarial inputs up to 1 MB; no test here times anything). These tests pin
what it does: on short texts it redacts exactly what the original,
backtracking patterns redacted; in long adversarial texts no constructed
credential survives; and the caps apply after redaction, so a secret the cut
would halve never shows.
"""

from __future__ import annotations

import string

import orjson
import pytest
from bench.redaction import old_redact_text
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chm.core import redaction
from chm.core.redaction import (
    MAX_STORED_PAYLOAD_BYTES,
    MAX_STORED_TEXT,
    REDACTED,
    Redactor,
    cap_payload,
    cap_text,
    is_secret_key,
    redact,
    redact_text,
    stored_payload,
    stored_text,
)

# old_redact_text: the patterns as they were before they were made linear
# (quadratic on long runs of letters), the reference for what redaction must
# still catch; bench/redaction.py times them with --before.


# Pieces that make the patterns start, stop and restart: scheme characters,
# "://", "@", "=", separators, keywords, case variants, non-ASCII letters.
PIECES = st.sampled_from(
    [
        *"aZ1+.-:/@=&;'\" \t\n_é",
        "://",
        "a://",
        "1a://",
        "https://",
        "u:p@",
        "token=",
        "TOKEN=",
        "sig=",
        "AccountKey=",
        "Bearer ",
        "basic\t",
        "Token  ",
        "abcdef",
        "xyz123",
    ]
)
SHORT_TEXTS = st.lists(PIECES, max_size=40).map("".join)


@given(text=SHORT_TEXTS)
@settings(max_examples=2000, deadline=None)
def test_redaction_catches_exactly_what_the_backtracking_patterns_caught(text: str) -> None:
    assert redact_text(text) == old_redact_text(text)


@given(text=st.text(alphabet=string.printable + "é", max_size=200))
@settings(max_examples=1000, deadline=None)
def test_redaction_of_any_short_printable_text_is_unchanged(text: str) -> None:
    assert redact_text(text) == old_redact_text(text)


# Long adversarial noise: runs of one piece repeated thousands of times (the
# inputs that were quadratic), mixed with any pieces.
NOISE_PIECES = st.sampled_from(
    ["a", "1a", "a1", "a://", "a://b:", "@", "=", "token=", "Bearer ", " ", "-", "x@", "é"]
)


@st.composite
def long_noise(draw: st.DrawFn) -> str:
    piece = draw(NOISE_PIECES)
    repeat = draw(st.integers(1_000, 20_000))
    return piece * repeat + draw(SHORT_TEXTS)


# The secret's characters never occur in the noise: "Q" marks it.
SECRETS = st.text(alphabet="Q0123456789", min_size=12, max_size=40).map(lambda s: "Q" + s)
CREDENTIALS = st.sampled_from(
    [
        "https://svc-user:{secret}@warehouse.example.com/db",
        "postgresql+psycopg://etl:{secret}@db:5432/x",
        "https://host/path?sv=2024&sig={secret}&se=2027",
        "Server=tcp:x;AccountKey={secret};EndpointSuffix=core",
        "password={secret}",
        "access_token={secret}",
        "Authorization: Bearer {secret}",
        "Basic {secret}",
        "token {secret}",
    ]
)


@given(
    before=long_noise(),
    after=long_noise(),
    credential=CREDENTIALS,
    secret=SECRETS,
    separator=st.sampled_from([" ", "\n", "&", ";", "\t"]),
)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_no_constructed_credential_survives_in_long_adversarial_text(
    before: str, after: str, credential: str, secret: str, separator: str
) -> None:
    text = before + separator + credential.format(secret=secret) + separator + after
    redacted = redact_text(text)
    assert "Q" not in redacted
    assert REDACTED in redacted


def test_a_megabyte_of_letters_is_returned_unchanged() -> None:
    for text in ("a" * 1_000_000, "a1" * 500_000, "a://" + "b" * 1_000_000):
        assert redact_text(text) == text


def test_leading_digits_of_a_scheme_run_are_kept_and_its_credentials_removed() -> None:
    assert redact_text("see 12+svn+ssh://bob:pw@host") == f"see 12+svn+ssh://{REDACTED}@host"
    assert redact_text("123://bob:pw@host") == "123://bob:pw@host"  # no scheme without a letter


def test_long_keys_are_judged_but_not_remembered() -> None:
    cache = redaction._is_secret_key_cached
    cache.cache_clear()
    assert is_secret_key("x" * 10_000 + "password")
    assert not is_secret_key("y" * 10_000)
    assert cache.cache_info().currsize == 0
    assert is_secret_key("dbPassword")
    assert cache.cache_info().currsize == 1


# --- the caps -------------------------------------------------------------------------


def test_a_text_within_the_cap_is_stored_as_is() -> None:
    text = "e" * MAX_STORED_TEXT
    assert cap_text(text) is text


def test_a_longer_text_is_cut_with_a_marker_telling_its_length() -> None:
    capped = cap_text("e" * 1_048_576)
    assert len(capped) == MAX_STORED_TEXT
    assert capped.endswith("… [truncated, 1048576 characters]")
    assert capped.startswith("e" * 19_000)


def test_a_payload_within_the_cap_is_stored_as_is() -> None:
    payload = {"blob": "b" * (MAX_STORED_PAYLOAD_BYTES - 20)}
    assert len(orjson.dumps(payload)) <= MAX_STORED_PAYLOAD_BYTES
    assert cap_payload(payload) is payload
    assert cap_payload(None) is None


def test_a_larger_payload_is_replaced_by_a_marker_with_its_size() -> None:
    payload = {"blob": "b" * MAX_STORED_PAYLOAD_BYTES}
    size = len(orjson.dumps(payload))
    assert cap_payload(payload) == {"_chm_truncated": True, "original_bytes": size}
    # Its size is that of compact JSON in UTF-8, whatever the serializer can write.
    huge_int = {"n": 10**40, "é": "é" * MAX_STORED_PAYLOAD_BYTES}
    expected = len(f'{{"n":{10**40},"é":"'.encode()) + 2 * MAX_STORED_PAYLOAD_BYTES + len('"}')
    assert cap_payload(huge_int) == {"_chm_truncated": True, "original_bytes": expected}


def cut_at(length: int) -> int:
    """Where cap_text cuts a text of ``length`` characters."""
    return MAX_STORED_TEXT - len(f"… [truncated, {length} characters]")


def test_a_secret_at_the_cut_is_removed_before_the_text_is_cut() -> None:
    # The password straddles the cut and its "@" lies past it: cut first, the
    # patterns would no longer see a credential and half of the password
    # would be stored.
    password = "Q7d9f2a4c6e8b0Q7d9f2a4c6e8b0"
    prefix = "e" * (cut_at(MAX_STORED_TEXT + 100) - len(" https://svc:") - 6)
    text = prefix + f" https://svc:{password}@warehouse/db "
    text += "e" * (MAX_STORED_TEXT + 100 - len(text))
    assert "Q7d9f2" in cap_text(text)  # what cutting first would store
    stored = stored_text(text)
    assert len(stored) == MAX_STORED_TEXT
    assert "Q" not in stored
    assert stored.endswith(f"… [truncated, {len(redact_text(text))} characters]")
    payload = stored_payload({"message": text, "password": password, "n": 1})
    assert payload == {"message": redact_text(text), "password": REDACTED, "n": 1}


def test_extra_secrets_are_removed_before_the_cut_too() -> None:
    token = "Q-configured-token-0042"
    text = "e" * (cut_at(MAX_STORED_TEXT + 100) - 8) + token
    text += "e" * (MAX_STORED_TEXT + 100 - len(text))
    assert "Q-config" in cap_text(text)  # what cutting first would store
    stored = stored_text(text, (token,))
    assert len(stored) == MAX_STORED_TEXT
    assert "Q" not in stored
    assert redact({"note": token}, (token,)) == {"note": REDACTED}


def test_one_redactor_removes_credentials_and_the_secrets_it_knows() -> None:
    redactor = Redactor(("tok-aaaa-1111", ""))  # an empty value is no secret
    assert redactor.secrets == ("tok-aaaa-1111",)
    text = "GET https://u:pw@host/x failed: tok-aaaa-1111 and login-bbbb-2222"
    assert redactor.text(text) == (
        f"GET https://{REDACTED}@host/x failed: {REDACTED} and login-bbbb-2222"
    )
    # A secret learnt later (a login's token) joins the ones already known.
    later = redactor.with_secret("login-bbbb-2222")
    assert later.text(text) == f"GET https://{REDACTED}@host/x failed: {REDACTED} and {REDACTED}"
    assert redactor.secrets == ("tok-aaaa-1111",)
    value = {"note": [text], "api_key": "k", "n": 1}
    assert later.value(value) == {"note": [later.text(text)], "api_key": REDACTED, "n": 1}
    assert later.value(value) == redact(value, later.secrets)
    assert later.stored_text(text) == stored_text(text, later.secrets)
    assert later.stored_payload(value) == stored_payload(value, later.secrets)


def test_a_secret_that_holds_another_is_removed_whole_whatever_the_order() -> None:
    # A login's token that begins with the password it was exchanged for.
    password, token = "hunter22", "hunter22-session-4f9a1c"
    for redactor in (Redactor((password,)).with_secret(token), Redactor((token, password))):
        assert redactor.text(f"x {token} y") == f"x {REDACTED} y"


# --- one look at a whole payload (issue 17) ---------------------------------------------
#
# Redactor.stored_payload stores a payload as it is when its compact JSON shows
# nothing the walk would change (Redactor.leaves_unchanged); it must store
# exactly what the walk stores, whatever the payload and the known secrets.

# Keys: plain ones, and secret-looking ones written every way is_secret_key reads.
SECRETISH_KEYS = st.builds(
    lambda part, left, right, sep: left + part.replace("_", sep) + right,
    st.sampled_from(["password", "api_key", "accessKey", "Session-Key", "TOKEN", "cookie", "x"]),
    st.sampled_from(["", "db", "client_", "X-"]),
    st.sampled_from(["", "_id", "Value", " 2"]),
    st.sampled_from(["_", "-", " ", ""]),
)
JSON_KEYS = st.one_of(
    st.text(max_size=12), SECRETISH_KEYS, st.sampled_from(["é", "Ba\u017fic", "K"])
)
JSON_TEXTS = st.one_of(
    st.text(max_size=30),
    SHORT_TEXTS,
    st.sampled_from(
        ["Ba\u017fic abcdefgh", "TO\u212aEN abcdefgh", "a\nb", 'q"uote', "back\\slash"]
    ),
)
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), JSON_TEXTS),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(JSON_KEYS, children, max_size=4)
    ),
    max_leaves=12,
)
KNOWN_SECRETS = st.lists(
    st.one_of(
        st.sampled_from(["s3cr3t-value", 'quo"te-secret', "new\nline", "é-secret"]),
        st.text(min_size=1, max_size=8),
    ),
    max_size=2,
)


@given(value=JSON_VALUES, secrets=KNOWN_SECRETS, embed=st.booleans())
@settings(max_examples=1500, deadline=None)
def test_a_payload_left_as_it_is_is_exactly_what_the_walk_stores(
    value: object, secrets: list[str], embed: bool
) -> None:
    if embed and secrets:
        value = {"note": f"see {secrets[0]} here", "value": value}
    redactor = Redactor(secrets)
    walked = redactor.value(value)
    if redactor.leaves_unchanged(orjson.dumps(value)):
        assert walked == value
    assert redactor.stored_payload(value) == cap_payload(walked)


def test_a_payload_with_nothing_to_redact_is_stored_as_it_is() -> None:
    payload = {"run_id": "r-1", "metrics": {"rows": 3}, "tags": ["nightly", "é"]}
    assert Redactor(("tok-aaaa-1111",)).stored_payload(payload) is payload


@pytest.mark.parametrize(
    "payload",
    [
        {"dbPassword": "hunter2"},
        {"X-Api-Key": "k"},
        {"nested": [{"session key": "v"}]},
        {"url": "https://u:pw@host/x"},
        {"query": "pwd=abc"},
        {"auth": "Bearer abcdefgh"},
        # Unicode case folding: the long s (U+017F) is an "s" to the bearer pattern.
        {"auth": "Ba\u017fic abcdefgh"},
        {"note": "the known secret tok-aaaa-1111 leaked"},
        {"quoted": 'say "tok"-aaaa-1111'},
    ],
)
def test_a_payload_holding_anything_to_redact_is_walked(payload: dict[str, object]) -> None:
    redactor = Redactor(("tok-aaaa-1111", '"tok"-aaaa'))
    assert not redactor.leaves_unchanged(orjson.dumps(payload))
    assert redactor.stored_payload(payload) == cap_payload(redactor.value(payload))
    assert redactor.stored_payload(payload) != payload


def test_a_secret_written_with_json_escapes_is_still_found() -> None:
    for secret in ('pa"ss', "back\\slash", "line\nbreak", "tab\there", "é-ü"):
        payload = {"note": f"x {secret} y"}
        redactor = Redactor((secret,))
        assert not redactor.leaves_unchanged(orjson.dumps(payload))
        assert redactor.stored_payload(payload) == {"note": f"x {REDACTED} y"}


def test_a_large_clean_payload_is_capped_by_the_size_of_its_one_serialization() -> None:
    payload = {"blob": "b" * MAX_STORED_PAYLOAD_BYTES}
    assert Redactor().leaves_unchanged(orjson.dumps(payload))
    assert Redactor().stored_payload(payload) == {
        "_chm_truncated": True,
        "original_bytes": len(orjson.dumps(payload)),
    }


@pytest.mark.parametrize("text", ["Ba\u017fic abcdefgh", "TO\u212aEN abcdefgh", "bEaReR abcdefgh"])
def test_text_redaction_reads_the_bearer_keywords_in_any_case_as_before(text: str) -> None:
    assert redact_text(text) == old_redact_text(text)
    assert REDACTED in redact_text(text)
