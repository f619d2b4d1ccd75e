"""Ids from untrusted input, and ids this process makes for its own records."""

from __future__ import annotations

import itertools
import os
import secrets
import uuid

MAX_ID_LENGTH = 64  # a UUID in any of its spellings is far shorter


def uuid_parse(raw: object) -> uuid.UUID | None:
    """A UUID (session, execution, file id...) from untrusted input, or None when it is not one."""
    if isinstance(raw, uuid.UUID):
        return raw
    if not isinstance(raw, str) or len(raw) > MAX_ID_LENGTH:
        return None
    try:
        return uuid.UUID(raw)
    except ValueError:
        return None


# Request ids and socket channel names need to be unique, not secret: a client may send
# its own request id, and a channel name reaches only operators (the admin, `sockets
# disconnect`, the log). `uuid4()` reads os.urandom for each, a syscall that took 3.5 % of
# the event loop in a reconnect storm; here each process draws 64 random bits once (again
# in a forked child) and counts, so two processes, or a process and its restart, share a
# prefix with a chance of about one in 2**64 per pair.
_prefix = ""
_counter = itertools.count()


def _reseed() -> None:
    global _prefix, _counter
    _prefix, _counter = secrets.token_hex(8), itertools.count()


_reseed()
os.register_at_fork(after_in_child=_reseed)


def local_id() -> str:
    """32 hex digits, like `uuid4().hex`, unique across processes and restarts (not
    unguessable: see above)."""
    return f"{_prefix}{next(_counter):016x}"
