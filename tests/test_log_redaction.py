"""The log filter of chm serve and chm ingest (SE-002): no line shows a secret,
whoever logs it and however its formatter reads the record."""

from __future__ import annotations

import io
import logging

from uvicorn.logging import AccessFormatter

from chm.core.redaction import RedactingFilter, register_secret

SECRET = "registered-S3cret-8d7c6b"


def captured(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger(f"test.redaction.{id(stream)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, stream


def test_registered_secrets_and_credentials_leave_messages_arguments_and_tracebacks() -> None:
    register_secret(SECRET)
    logger, stream = captured(logging.Formatter("%(message)s"))
    logger.debug("header %s", (b"X-Echo", f"Bearer {SECRET}".encode()))
    logger.info(f"plain {SECRET} and postgresql://u:pw-123456@h/db")
    logger.info("count %d of %s", 3, {"token": SECRET})
    try:
        raise RuntimeError(f"failed with {SECRET}")
    except RuntimeError:
        logger.exception("boom")
    text = stream.getvalue()
    assert SECRET not in text and "pw-123456" not in text
    assert "count 3 of" in text and "[REDACTED]" in text
    assert "RuntimeError: failed with [REDACTED]" in text


def test_uvicorns_access_formatter_still_reads_its_arguments() -> None:
    register_secret(SECRET)
    logger, stream = captured(AccessFormatter("%(request_line)s %(status_code)s", use_colors=False))
    logger.info(
        '%s - "%s %s HTTP/%s" %d',
        "127.0.0.1:5000", "GET", f"/api/v1/clients?access_token={SECRET}", "1.1", 401,
    )  # fmt: skip
    line = stream.getvalue().strip()
    assert line == "GET /api/v1/clients?access_token=[REDACTED] HTTP/1.1 401 Unauthorized"


def test_short_values_are_not_registered() -> None:
    register_secret("abc")
    register_secret(None)
    logger, stream = captured(logging.Formatter("%(message)s"))
    logger.info("abc stays readable")
    assert stream.getvalue().strip() == "abc stays readable"
