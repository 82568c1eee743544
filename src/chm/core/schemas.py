"""Field types shared by the API schemas."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    StringConstraints,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

from chm.core.ids import ID_DESCRIPTION, ID_PATTERN
from chm.core.timeutil import as_utc

SLUG_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,49}$"

# Text may hold any character but NUL, which PostgreSQL cannot store.
NO_NUL_PATTERN = r"^[^\x00]*$"
# ... and a trimmed required text needs one character that trimming keeps: the
# schema then says that a blank value ("\r", "  ") is invalid, as validation does.
# The class lists the characters pydantic trims (Unicode White_Space), spelled
# out because `\s` means another set in each regex dialect (Python's includes
# \x1c-\x1f, which pydantic keeps).
_TRIMMED = r"\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
NOT_BLANK_PATTERN = rf"^[^\x00]*[^\x00{_TRIMMED}][^\x00]*$"


# The same characters, for str.strip.
_TRIMMED_CHARS = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000" + "".join(
    chr(code) for code in range(0x2000, 0x200B)
)


@dataclass(frozen=True)
class _Text:
    """A free-text field: bounded as sent (the schema's maxLength is on the
    text the client sends, so a longer one is refused even if trimming would
    shorten it), then trimmed, and required texts must keep a character; never
    NUL. The schema states the same rule with NOT_BLANK_PATTERN."""

    max_length: int
    min_length: int
    strip: bool

    def _trimmed(self, value: str) -> str:
        value = value.strip(_TRIMMED_CHARS)
        if len(value) < self.min_length:
            raise PydanticCustomError(
                "string_too_short",
                "String should have at least {min_length} character once trimmed",
                {"min_length": self.min_length},
            )
        return value

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        constraints = StringConstraints(
            min_length=self.min_length, max_length=self.max_length, pattern=NO_NUL_PATTERN
        )
        schema = handler.generate_schema(Annotated[source, constraints])
        if not self.strip:
            return schema
        return core_schema.no_info_after_validator_function(self._trimmed, schema)

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        if self.strip and self.min_length > 0:
            json_schema["pattern"] = NOT_BLANK_PATTERN
        return json_schema


def text(max_length: int, *, min_length: int = 1, strip: bool = True) -> _Text:
    """A free-text field: bounded as sent, trimmed, no NUL."""
    return _Text(max_length, min_length, strip)


Slug = Annotated[str, StringConstraints(pattern=SLUG_PATTERN)]
Name = Annotated[str, text(200)]


def _id_to_str(value: object) -> object:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


# An id in a response: an integer in the database, a string on the wire. (Ids
# sent by clients are parsed by the types of chm.core.ids.)
EntityId = Annotated[
    str,
    BeforeValidator(_id_to_str),
    Field(description=ID_DESCRIPTION, pattern=ID_PATTERN),
]


def _not_null(value: object) -> object:
    if value is None:
        raise PydanticCustomError("null_not_allowed", "this field cannot be null")
    return value


def _drop_null(schema: dict[str, Any]) -> None:
    variants = schema.pop("anyOf", None)
    if variants is None:
        return
    kept = [v for v in variants if v.get("type") != "null"]
    if len(kept) == 1:
        schema.update(kept[0])
    else:
        schema["anyOf"] = kept


class _NotNull:
    """PATCH fields that may be omitted but not set to null: validators run on
    values actually sent, never on omitted fields; the schema shows no null."""

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        return core_schema.no_info_after_validator_function(_not_null, handler(source))

    def __get_pydantic_json_schema__(self, schema: Any, handler: Any) -> Any:
        json_schema = handler(schema)
        _drop_null(json_schema)
        return json_schema


NotNull = _NotNull()


_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?([Zz]|[+-]\d{2}:?\d{2})?"
)


def _rfc3339_only(value: object) -> object:
    """Timestamps come as RFC 3339 text; pydantic would also read numbers as
    Unix seconds ("1.0"), which the API does not promise and rejects."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and _RFC3339.fullmatch(value.strip()):
        return value.strip()
    raise PydanticCustomError(
        "invalid_datetime", "expected an RFC 3339 timestamp such as 2026-01-31T08:00:00Z"
    )


def _in_utc(value: datetime) -> datetime:
    """``value`` in UTC; a 422, not an OverflowError, when UTC has no such time
    (0001-01-01T00:00:00+00:01 is before the first representable instant)."""
    try:
        return as_utc(value)
    except OverflowError:
        raise PydanticCustomError(
            "out_of_range", "timestamp is out of range once converted to UTC"
        ) from None


# A request timestamp without an offset is read as UTC (contract: Conventions).
UTCTimestamp = Annotated[datetime, BeforeValidator(_rfc3339_only), AfterValidator(_in_utc)]


class RequestModel(BaseModel):
    """Request bodies: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


class ResponseModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


def integral_number(value: object) -> object:
    """JSON Schema's integer: 5 and 5.0 (a number with a zero fraction) are both
    integers; "5" and true are not (a StrictInt after this refuses them)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
