"""Domain errors and their one rendering: RFC 9457 problem+json (FR-016, AC-002)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

logger = logging.getLogger("chm.errors")

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "https://chm.dev/problems/"


@dataclass(frozen=True)
class FieldIssue:
    field: str
    code: str
    message: str


class ChmError(Exception):
    """Base of every error a service raises; rendered as problem+json."""

    status: int = 500
    type_slug: str = "internal-error"
    title: str = "Internal server error"

    def __init__(self, detail: str | None = None, errors: Sequence[FieldIssue] = ()) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.errors = list(errors)


class ValidationFailed(ChmError):
    status = 422
    type_slug = "validation-error"
    title = "Request validation failed"

    def __init__(self, errors: Sequence[FieldIssue]) -> None:
        n = len(errors)
        super().__init__(f"{n} field{'s are' if n != 1 else ' is'} invalid", errors)

    @classmethod
    def one(cls, field: str, code: str, message: str) -> ValidationFailed:
        return cls([FieldIssue(field, code, message)])


class NotFound(ChmError):
    status = 404
    type_slug = "not-found"
    title = "Not found"


class Conflict(ChmError):
    status = 409
    type_slug = "conflict"
    title = "Conflict"


class Unauthorized(ChmError):
    status = 401
    type_slug = "unauthorized"
    title = "Unauthorized"


class BadRequest(ChmError):
    status = 400
    type_slug = "bad-request"
    title = "Malformed request"


class PayloadTooLarge(ChmError):
    status = 413
    type_slug = "payload-too-large"
    title = "Payload too large"


class ServiceUnavailable(ChmError):
    status = 503
    type_slug = "service-unavailable"
    title = "Service unavailable"


class ProblemField(BaseModel):
    field: str
    code: str
    message: str


class Problem(BaseModel):
    """The error body of every 4xx/5xx answer."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[ProblemField] = []


def problem_body(
    status: int, type_slug: str, title: str, detail: str, errors: Iterable[FieldIssue] = ()
) -> dict[str, Any]:
    """The problem+json document (``Problem``) of an error."""
    return {
        "type": PROBLEM_BASE + type_slug,
        "title": title,
        "status": status,
        "detail": detail,
        "errors": [{"field": e.field, "code": e.code, "message": e.message} for e in errors],
    }


def problem_response(
    status: int,
    type_slug: str,
    title: str,
    detail: str,
    errors: Iterable[FieldIssue] = (),
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = problem_body(status, type_slug, title, detail, errors)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def problem_document(error: ChmError) -> dict[str, Any]:
    """``error`` as the problem+json document its answer would carry."""
    return problem_body(error.status, error.type_slug, error.title, error.detail, error.errors)


def render_error(error: ChmError) -> JSONResponse:
    return problem_response(error.status, error.type_slug, error.title, error.detail, error.errors)


_PYDANTIC_CODES = {
    "missing": "required",
    "extra_forbidden": "unknown_field",
    "string_too_short": "too_short",
    "string_too_long": "too_long",
    "string_pattern_mismatch": "invalid_format",
    "greater_than_equal": "too_small",
    "greater_than": "too_small",
    "less_than_equal": "too_large",
    "less_than": "too_large",
    "enum": "invalid_choice",
    "literal_error": "invalid_choice",
    "datetime_parsing": "invalid_datetime",
    "datetime_from_date_parsing": "invalid_datetime",
    "datetime_type": "invalid_datetime",
    "model_attributes_type": "invalid_type",
    "dict_type": "invalid_type",
}


_LOCATION_KINDS = ("body", "query", "path", "header")


def _union_tag(parts: Sequence[int | str], body: Any) -> tuple[str, str] | None:
    """The (field, tag) a tagged union's branch is chosen by, when ``parts`` starts
    with one: pydantic names the branch in an error's location
    (``failures_in_window.threshold``), a step that is no key of the body but
    the value of one of its fields (``rule_type``)."""
    if len(parts) < 2 or not isinstance(parts[0], str) or not isinstance(body, dict):
        return None
    if parts[0] in body:
        return None
    for field, value in body.items():
        if value == parts[0]:
            return field, parts[0]
    return None


def _issue(err: Any, body: Any) -> FieldIssue:
    loc = list(err.get("loc", ()))
    # Drop the location kind ("body", "query", "path"): the field is named by
    # its own name, with dotted paths for nested fields.
    in_body = bool(loc) and loc[0] == "body"
    parts = loc[1:] if loc and loc[0] in _LOCATION_KINDS else loc
    message = str(err.get("msg", "invalid value"))
    # Our own validators raise ValueError("..."): pydantic prefixes "Value error, ".
    message = message.removeprefix("Value error, ")
    error_type = str(err.get("type", "invalid"))
    code = _PYDANTIC_CODES.get(error_type, "invalid" if error_type == "value_error" else error_type)
    tag = _union_tag(parts, body) if in_body else None
    if tag is not None:
        parts = parts[1:]
        if error_type == "missing":
            message = f"{parts[-1]} is required for {tag[1]} rules"
    if error_type in ("union_tag_invalid", "union_tag_not_found"):
        # The field that chooses the branch is missing or names no branch.
        context = err.get("ctx") or {}
        parts = [*parts, str(context.get("discriminator", "")).strip("'")]
        if error_type == "union_tag_invalid":
            expected = context.get("expected_tags", "the documented values")
            code, message = "invalid_choice", f"Input should be one of {expected}"
        else:
            code, message = "required", "Field required"
    field = ".".join(str(p) for p in parts) if parts else "body"
    return FieldIssue(field, code, message)


def issues_from_pydantic(raw_errors: Sequence[Any], body: Any = None) -> list[FieldIssue]:
    """pydantic's errors as field issues; ``body`` is the request body they are about."""
    return [_issue(err, body) for err in raw_errors]


_METHOD_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route answers on this request's path (RFC 9110 §15.5.6).

    The router answers a 405 from the first route whose path matches, which
    knows only its own methods; the path may be served by several routes
    (``GET`` and ``POST /clients`` are two)."""
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.routes):
        match, _ = route.matches(dict(request.scope))
        if match is not Match.NONE and route.methods:
            methods |= route.methods
    rank = {method: i for i, method in enumerate(_METHOD_ORDER)}
    return sorted(methods, key=lambda method: (rank.get(method, len(rank)), method))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ChmError)
    async def _chm_error(_request: Request, exc: ChmError) -> JSONResponse:
        return render_error(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        raw = exc.errors()
        if any(e.get("type") == "json_invalid" for e in raw):
            return render_error(BadRequest("The request body is not valid JSON"))
        path_errors = [e for e in raw if tuple(e.get("loc", ()))[:1] == ("path",)]
        if path_errors:
            # Path parameters are ids (chm.core.ids): a text that cannot be one
            # of ours names no resource, like a well-formed id that does not exist.
            return render_error(NotFound(str(path_errors[0].get("msg", "Not found"))))
        return render_error(ValidationFailed(issues_from_pydantic(raw, exc.body)))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        titles = {
            404: "Not found",
            405: "Method not allowed",
            401: "Unauthorized",
            413: PayloadTooLarge.title,
        }
        slugs = {
            404: "not-found",
            405: "method-not-allowed",
            401: "unauthorized",
            413: PayloadTooLarge.type_slug,
        }
        detail = exc.detail if isinstance(exc.detail, str) else titles.get(exc.status_code, "Error")
        headers = dict(exc.headers) if exc.headers else {}
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        return problem_response(
            exc.status_code,
            slugs.get(exc.status_code, "http-error"),
            titles.get(exc.status_code, "HTTP error"),
            detail,
            headers=headers or None,
        )

    @app.exception_handler(IntegrityError)
    async def _integrity(_request: Request, exc: IntegrityError) -> JSONResponse:
        # A constraint the service did not foresee (or a race it lost): a
        # conflict, never a 500, and never the SQL text.
        logger.info("integrity error mapped to 409: %s", type(exc.orig).__name__)
        return render_error(Conflict("The change conflicts with stored data"))

    @app.exception_handler(DataError)
    async def _data(_request: Request, exc: DataError) -> JSONResponse:
        # A value the database cannot store that validation let through.
        logger.warning("database rejected a value: %s", type(exc.orig).__name__)
        return render_error(
            ValidationFailed.one("body", "unstorable_value", "a value cannot be stored")
        )

    @app.exception_handler(OperationalError)
    async def _operational(_request: Request, exc: OperationalError) -> JSONResponse:
        logger.error("database unavailable: %s", type(exc.orig).__name__)
        return render_error(ServiceUnavailable("The database is busy or unreachable; retry"))

    @app.exception_handler(PoolTimeout)
    async def _pool_timeout(_request: Request, _exc: PoolTimeout) -> JSONResponse:
        # Every connection of this process's pool stayed busy past the pool's
        # timeout (CHM_DB_POOL_SIZE, CHM_DB_MAX_OVERFLOW: docs/deployment.md).
        logger.error("database connections exhausted: every pooled connection stayed busy")
        return render_error(ServiceUnavailable("The database's connections are all busy; retry"))

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error")
        return render_error(ChmError("An unexpected error occurred"))


_DESCRIPTIONS = {
    400: "Malformed JSON body",
    401: "Missing or wrong API token",
    404: "Unknown id or path",
    409: "Uniqueness or state conflict",
    413: "Request body larger than CHM_MAX_BODY_BYTES",
    422: "Validation failed",
    503: "Database unreachable or busy",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for problem+json answers."""
    return {status: {"model": Problem, "description": _DESCRIPTIONS[status]} for status in statuses}


PROBLEM_RESPONSES = problem_responses(400, 401, 404, 409, 413, 422, 503)


def install_problem_openapi(app: FastAPI) -> None:
    """Document error bodies under ``application/problem+json``, their real media type."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
            )
            for path_item in schema.get("paths", {}).values():
                for operation in path_item.values():
                    for status, response in operation.get("responses", {}).items():
                        content = response.get("content", {})
                        if status[0] in "45" and "application/json" in content:
                            content[PROBLEM_MEDIA_TYPE] = content.pop("application/json")
            schema.get("components", {}).get("schemas", {}).pop("HTTPValidationError", None)
            schema.get("components", {}).get("schemas", {}).pop("ValidationError", None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
