"""Log hygiene: no token ever reaches a log line."""

from __future__ import annotations

import logging
import re

# Query-string credentials (the legacy WebSocket transport) and bearer values.
_SECRET_PATTERNS = (
    re.compile(r"((?:access_token|session_token|refresh_token|token)=)[^&\s\"']+", re.IGNORECASE),
    re.compile(r"(bearer[ .])[A-Za-z0-9\-_=]+\.[A-Za-z0-9\-_=]+\.?[A-Za-z0-9\-_.+/=]*", re.IGNORECASE),
)


def redact(text: str) -> str:
    """Replace every credential in `text` with `[redacted]`."""
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(r"\1[redacted]", text)
    return text


class RedactSecretsFilter(logging.Filter):
    """Rewrites a record's rendered message so that credentials never leave the process."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True
