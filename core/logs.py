"""Log hygiene: no token ever reaches a log line. And the access lines of both servers,
with their fields as keys (`access_line`)."""

from __future__ import annotations

import logging
import logging.config
import re

# Query-string credentials (the legacy WebSocket transport), bearer values, and any bare
# JWT wherever it stands (an exception's text, a URL, a payload quoted in a message): three
# base64url segments, the first a JSON header, so `eyJ` (`{"`). The signature may be empty
# (an unsigned token is still a credential to someone).
_SECRET_PATTERNS = (
    (re.compile(r"((?:access_token|session_token|refresh_token|token)=)[^&\s\"']+", re.IGNORECASE), r"\1[redacted]"),
    (re.compile(r"(bearer[ .])[A-Za-z0-9\-_=]+\.[A-Za-z0-9\-_=]+\.?[A-Za-z0-9\-_.+/=]*", re.IGNORECASE), r"\1[redacted]"),
    (re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), "[redacted]"),
)


def redact(text: str) -> str:
    """Replace every credential in `text` with `[redacted]`."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


# Attributes every LogRecord has; anything else on a record came in through `extra=`
# (django.request passes the `request` object, which formatters print with its path).
_STANDARD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_PLAIN_TYPES = (int, float, bool, type(None))


def _redacted_value(value: object) -> object:
    if isinstance(value, _PLAIN_TYPES):
        return value
    text = value if isinstance(value, str) else str(value)
    cleaned = redact(text)
    # Objects without a credential in their text stay objects, for handlers that use them.
    return value if cleaned == text else cleaned


class RedactSecretsFilter(logging.Filter):
    """Rewrites every field of a record (message, arguments, extra fields such as
    `request`, exception and stack text) so that credentials never leave the process."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        for name, value in list(vars(record).items()):
            if name not in _STANDARD_ATTRIBUTES:
                setattr(record, name, _redacted_value(value))
        if record.exc_info and record.exc_info[0] is not None:
            # Formatted once here and kept as text: the formatters print exc_text when
            # exc_info is gone, and an exception's message can quote a URL with a token.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def access_line(
    logger: logging.Logger, message: str, *args: object, method: str, path: str, status: int | None, duration_s: float | None,
    size: int | None, client: str | None, request_id: str | None, **more: object,
) -> None:
    """One access line of daphne or gunicorn: `message % args` for people, and each field its own
    key for a log pipeline (LOG_FORMAT=json), the request id the same one the service's own
    lines of that request carry. The path without its query string, which may hold a token."""
    from core.middleware import request_id_var

    fields = {
        "method": method,
        "path": path.split("?", 1)[0],
        "status": status,
        "duration_ms": None if duration_s is None else round(duration_s * 1000, 2),
        "bytes": size,
        "client": client,
        **more,
    }
    # The request-id filter stamps every record with the context's id: the request's, here.
    token = request_id_var.set(request_id or "-")
    try:
        logger.info(message, *args, extra=fields)
    finally:
        request_id_var.reset(token)


def logging_configure(config: dict) -> None:
    """Django's LOGGING_CONFIG: the dict, then Python's warnings routed through it (the
    `py.warnings` logger), so that with LOG_FORMAT=json a warning is a JSON line like any
    other (Django no longer routes them itself)."""
    logging.config.dictConfig(config)
    logging.captureWarnings(True)
