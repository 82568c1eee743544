"""The log filter of chm serve and chm ingest (SE-002): no line shows a secret,
whoever logs it and however its formatter reads the record."""

from __future__ import annotations

import io
import logging
import subprocess
import sys

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


def test_each_server_process_logs_chm_through_the_redacting_filter() -> None:
    # chm serve --workers N: uvicorn starts each process afresh and applies
    # only its log config there; CHM's own loggers must go through it too.
    script = (
        "import logging, logging.config\n"
        "from chm.cli.serve import uvicorn_log_config\n"
        "from chm.core.redaction import register_secret\n"
        "logging.config.dictConfig(uvicorn_log_config('INFO'))\n"
        f"register_secret({SECRET!r})\n"
        f"logging.getLogger('chm.ingestion').warning('token %s refused', {SECRET!r})\n"
        "logging.getLogger('chm').info('an info line')\n"
        "logging.getLogger('chm').debug('a debug line')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr
    assert " WARNING chm.ingestion: token " in lines[0] and "refused" in lines[0]
    assert SECRET not in result.stderr
    assert lines[1].endswith(" INFO chm: an info line")
