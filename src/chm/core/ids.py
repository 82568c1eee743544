"""Ids: decimal text on the wire, integers behind the edge.

An id is parsed once, where the request comes in, by the type of the path
parameter, query parameter or body field that carries it; services take the
integer. The schema shows every id as a string with ``ID_PATTERN``, which
matches exactly the texts the server accepts: 1..2^63-1 in decimal, without
sign or leading zeros. What happens to any other text depends on where it is:

- a path id (``ClientID``, ...) names nothing we have: 404;
- a query filter (``IdFilter``) is a 422 ``invalid_id`` on that parameter;
- a body reference (``ClientRef``, ``PipelineRef``) is a 422 ``not_found`` on
  that field, as for a well-formed id that does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

from chm.core.errors import ValidationFailed

MAX_ID = 2**63 - 1


def _decimal_at_most(limit: int) -> str:
    """A regular expression for the decimals 1..limit, without leading zeros:
    every shorter number, then, for each leading part of ``limit``, the numbers
    that share it and have a smaller next digit, then ``limit`` itself."""
    digits = str(limit)
    width = len(digits)
    shorter = f"[1-9][0-9]{{0,{width - 2}}}" if width > 1 else ""
    branches = [shorter] if shorter else []
    for position, digit in enumerate(digits):
        lowest = 1 if position == 0 else 0
        if int(digit) <= lowest:
            continue
        below = str(lowest) if int(digit) - 1 == lowest else f"[{lowest}-{int(digit) - 1}]"
        rest = width - position - 1
        branches.append(digits[:position] + below + (f"[0-9]{{{rest}}}" if rest else ""))
    branches.append(digits)
    return "^(?:" + "|".join(branches) + ")$"


# 1..9223372036854775807 (the largest BIGINT), nothing else: a longer pattern
# than ^[1-9][0-9]{0,18}$, but one that says exactly what the server accepts.
ID_PATTERN = _decimal_at_most(MAX_ID)
# The same words as response ids (and the BI views' column comments): the
# pattern says which texts are ids.
ID_DESCRIPTION = "Opaque server-generated id"


def parse_id(raw: str) -> int | None:
    """The integer behind an id, or None when the text cannot be one of ours."""
    if not raw.isascii() or not raw.isdigit() or len(raw) > len(str(MAX_ID)):
        return None
    if raw[0] == "0":
        return None
    value = int(raw)
    return value if value <= MAX_ID else None


def reference_id(raw: str | None, field: str, what: str) -> int | None:
    """An id given outside HTTP (``chm ingest --client 42``), read like a body
    reference: None stays None, a text not ours is a 422 ``not_found`` on ``field``."""
    if raw is None:
        return None
    value = parse_id(raw)
    if value is None:
        raise ValidationFailed.one(field, "not_found", f"{what} {raw!r} does not exist")
    return value


@dataclass(frozen=True)
class _IdText:
    """An id field: the text must be one of ours; the field's value is its integer.

    ``error`` is the code a text that is not one of ours gets, and ``message``
    its message (``{value}`` is the text as sent)."""

    error: str
    message: str

    def _parse(self, value: Any) -> int:
        if not isinstance(value, str):
            raise PydanticCustomError("string_type", "an id is a JSON string")
        parsed = parse_id(value)
        if parsed is None:
            raise PydanticCustomError(self.error, self.message, {"value": repr(value)})
        return parsed

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            self._parse,
            json_schema_input_schema=core_schema.str_schema(pattern=ID_PATTERN),
        )

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema["description"] = ID_DESCRIPTION
        return json_schema


def _path_id(what: str) -> _IdText:
    # Any error of a path parameter is a 404 (chm.core.errors), with this message.
    return _IdText("unknown_id", f"{what} {{value}} not found")


def _reference(what: str) -> _IdText:
    return _IdText("not_found", f"{what} {{value}} does not exist")


# Path parameters (Polar's ``id: MeterID``).
ClientID = Annotated[int, _path_id("client")]
PipelineID = Annotated[int, _path_id("pipeline")]
RunID = Annotated[int, _path_id("run")]
AlertRuleID = Annotated[int, _path_id("alert rule")]
IngestionJobID = Annotated[int, _path_id("ingestion job")]
AlertID = Annotated[int, _path_id("alert")]
SilenceID = Annotated[int, _path_id("silence")]

# A list or report filter: malformed is a 422, unknown simply matches nothing.
IdFilter = Annotated[int, _IdText("invalid_id", "{value} is not a valid id")]

# References in request bodies: not one of ours is the same 422 as not existing.
ClientRef = Annotated[int, _reference("client")]
PipelineRef = Annotated[int, _reference("pipeline")]
AlertRuleRef = Annotated[int, _reference("alert rule")]
