"""A per-socket message budget. Written here because DRF's throttles are per request and
keep their history in the cache; a socket needs two floats in memory, not a cache trip
per frame."""

from __future__ import annotations

import time

from core.limits import parse_rate  # noqa: F401 - the consumer reads rates through here


class TokenBucket:
    """Allows bursts of `count` and a steady `count` per `seconds`."""

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
