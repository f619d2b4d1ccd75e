"""A per-socket message budget. Written here because DRF's throttles are per request and
keep their history in the cache; a socket needs two floats in memory, not a cache trip
per frame."""

from __future__ import annotations

import re
import time

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*(s|sec|second|m|min|minute)?\s*$")


def parse_rate(rate: str) -> tuple[int, float]:
    """'60/10s' -> (60, 10.0); '5/s' -> (5, 1.0); '100/min' -> (100, 60.0)."""
    match = _RATE.match(rate or "")
    if not match:
        raise ValueError(f"Invalid rate {rate!r}; expected like '60/10s' or '100/min'.")
    count, amount, unit = int(match.group(1)), match.group(2), match.group(3) or "s"
    seconds = (float(amount) if amount else 1.0) * (60.0 if unit.startswith("m") else 1.0)
    if count <= 0 or seconds <= 0:
        raise ValueError(f"Invalid rate {rate!r}.")
    return count, seconds


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
