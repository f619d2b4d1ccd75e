"""The declared errors: each name says what its code means, and the codes, statuses and
close codes a client sees are the contract's."""

from __future__ import annotations

import pytest

from core import exceptions
from core.exceptions import CloseCode, PermissionDenied, SessionEnded, SessionNotWritable


@pytest.mark.parametrize(
    ("error", "status", "code", "close_code"),
    [
        (SessionEnded, 401, "session_ended", CloseCode.SESSION_ENDED),
        (SessionNotWritable, 409, "session_not_active", CloseCode.SERVER_ERROR),
        (PermissionDenied, 403, "permission_denied", CloseCode.UNAUTHENTICATED),
    ],
)
def test_names_match_their_codes(error, status, code, close_code):
    assert (error.status_code, error.code, error.close_code) == (status, code, close_code)


def test_the_old_misleading_name_is_gone():
    # `SessionNotActive` carried `session_ended`, beside a `session_not_active` of another class.
    assert not hasattr(exceptions, "SessionNotActive")
