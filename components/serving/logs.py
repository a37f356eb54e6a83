"""A client's mistake is one WARNING line in the server log, not an ERROR with a traceback.

BentoML logs every refused request body (pydantic's ValidationError: wrong types, unknown fields;
a 4xx BentoMLException: malformed JSON, an oversized body) through `log_exception`, as an ERROR
with the full traceback. `ClientErrors`, a filter on that logger, rewrites those records into one
line; errors of the server itself (5xx, anything else) keep their traceback. The service's own
refusals (limits, unknown filters) log the same one line through `refused`.
"""
from __future__ import annotations

import logging

from bentoml.exceptions import BentoMLException
from pydantic import ValidationError

# The logger of bentoml._internal.server.http_app.log_exception.
BENTOML_LOGGER = "bentoml._internal.server.http_app"
logger = logging.getLogger("recloop.serving")


def client_status(error: BaseException | None) -> int | None:
    """The 4xx status a request error is answered with, or None for the server's own failures."""
    if isinstance(error, ValidationError):
        return 400
    if isinstance(error, BentoMLException) and int(error.error_code) < 500:
        return int(error.error_code)
    return None


def one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."


class ClientErrors(logging.Filter):
    """Turns BentoML's ERROR-with-traceback for a client's 4xx into one WARNING line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        status = client_status(error)
        if status is not None:
            path, method = record.args if isinstance(record.args, tuple) and len(record.args) == 2 else ("?", "?")
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg, record.args = "%s %s answered %d: %s", (method, path, status, one_line(error))
            record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


def install() -> None:
    """Add the filter to BentoML's logger (once; call after BentoML configured logging)."""
    target = logging.getLogger(BENTOML_LOGGER)
    if not any(isinstance(f, ClientErrors) for f in target.filters):
        target.addFilter(ClientErrors())


def refused(method: str, path: str, status: int, message: str) -> None:
    logger.warning("%s %s answered %d: %s", method, path, status, one_line(message))
