"""A bound on concurrent password hashing.

An Argon2 verification holds ~100 MiB and a core for ~150 ms. Under ASGI every concurrent
request gets a thread of its own, so a login flood would hash without limit, swap, and slow
every login down. At most LOGIN_HASH_CONCURRENCY hashes run at once per process (default:
one per core); up to LOGIN_HASH_QUEUE more wait, each at most LOGIN_HASH_WAIT; beyond that
the login is answered 503 with Retry-After instead of being queued without end.
Hand-written (a semaphore and a counter) because Django's hashers have no such bound.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Iterator

from core.conf import runtime_settings
from core.exceptions import Overloaded

_lock = threading.Lock()
_slots: threading.BoundedSemaphore | None = None
_slots_size = 0
_waiting = 0


def _semaphore() -> threading.BoundedSemaphore:
    global _slots, _slots_size
    size = runtime_settings.LOGIN_HASH_CONCURRENCY or os.cpu_count() or 1
    with _lock:
        if _slots is None or _slots_size != size:  # settings changed (tests): a new bound
            _slots, _slots_size = threading.BoundedSemaphore(size), size
        return _slots


@contextlib.contextmanager
def password_hashing_slot() -> Iterator[None]:
    """Hold one of the process's hashing slots while the block runs, or raise Overloaded."""
    global _waiting
    slots = _semaphore()
    if not slots.acquire(blocking=False):
        with _lock:
            if _waiting >= runtime_settings.LOGIN_HASH_QUEUE:
                raise Overloaded("Too many logins at once. Retry shortly.")
            _waiting += 1
        try:
            acquired = slots.acquire(timeout=runtime_settings.LOGIN_HASH_WAIT.total_seconds())
        finally:
            with _lock:
                _waiting -= 1
        if not acquired:
            raise Overloaded("Too many logins at once. Retry shortly.")
    try:
        yield
    finally:
        slots.release()
