"""Rates written as '60/10s' or '100/min', a per-caller rate limit on the shared cache,
and a token bucket in memory.

DRF's throttles only guard views; the domain's limits (intent submission, session
creation) must hold for every caller of the service, so they are applied here, in the
service, with the same cache the throttles use.
"""

from __future__ import annotations

import logging
import re
import time

from django.core.cache import cache

from core.exceptions import DEPENDENCY_ERRORS, RateLimited

logger = logging.getLogger(__name__)
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*(s|sec|second|m|min|minute|h|hour)?\s*$")


def parse_rate(rate: str) -> tuple[int, float]:
    """'60/10s' -> (60, 10.0); '5/s' -> (5, 1.0); '100/min' -> (100, 60.0); '1000/h'."""
    match = _RATE.match(rate or "")
    if not match:
        raise ValueError(f"Invalid rate {rate!r}; expected like '60/10s' or '100/min'.")
    count, amount, unit = int(match.group(1)), match.group(2), match.group(3) or "s"
    scale = 3600.0 if unit.startswith("h") else 60.0 if unit.startswith("m") else 1.0
    seconds = (float(amount) if amount else 1.0) * scale
    if count <= 0 or seconds <= 0:
        raise ValueError(f"Invalid rate {rate!r}.")
    return count, seconds


def rate_limit_take(*, scope: str, ident: object, rate: str) -> None:
    """Count one use of `scope` by `ident` in the current window of `rate`; over it,
    RateLimited with the seconds until the window ends (429 with Retry-After)."""
    count, seconds = parse_rate(rate)
    now = time.time()
    window = int(now // seconds)
    key = f"rate:{scope}:{ident}:{window}"
    try:
        cache.add(key, 0, timeout=int(seconds) + 1)
        used = cache.incr(key)
    except (ValueError, *DEPENDENCY_ERRORS):  # ValueError: the key expired in between
        logger.warning("rate-limit cache unavailable; %s not enforced", scope, exc_info=True)
        return
    if used > count:
        raise RateLimited(f"Too many requests ({rate}). Retry later.", retry_after=(window + 1) * seconds - now)


class TokenBucket:
    """A budget in memory: bursts of `count`, and `count` per `seconds` steadily (a socket's
    frames). Two floats, where DRF's throttles keep their history in the cache, a round
    trip per use."""

    __slots__ = ("capacity", "refill_per_s", "tokens", "updated")

    def __init__(self, count: int, seconds: float) -> None:
        self.capacity = float(count)
        self.refill_per_s = count / seconds
        self.tokens = float(count)
        self.updated = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.refill_per_s)
        self.updated = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True
