"""Where a tail stands in the event log: the ids it has read, and the holes below them.

Ids are handed out when a row is inserted, not when it commits, so on PostgreSQL a row can
become visible after a higher id was read. Each hole is read again on every wake-up for
EVENT_GAP_WAIT; after that (or at once, for a hole too wide to list id by id) it is read
again every LATE_READ_EVERY_S for EVENT_LATE_WAIT. So a slow transaction's row, a
session's end among them, still reaches its sockets within a second of its commit instead
of being left to their periodic re-check; a hole never filled was a rolled-back insert.
"""

from __future__ import annotations

from typing import Iterable, TypeVar

from core.conf import runtime_settings
from core.events import LoggedEvent

# A hole wider than this is not listed id by id (after a crash, PostgreSQL's sequence
# skips ahead): it is read as a range, at the late pace only.
MAX_GAP = 1000
LATE_READ_EVERY_S = 1.0
MAX_LATE_RANGES = 1000
Row = TypeVar("Row", bound=LoggedEvent)


class LogCursor:
    def __init__(self, high: int) -> None:
        self.high = high  # every id up to here was read, or is a hole below
        self.gaps: dict[int, float] = {}  # missing ids: when first missed
        self.late: list[tuple[int, int, float]] = []  # (first id, last id, when given up)
        self._late_read_at = float("-inf")

    def pending(self, now: float) -> tuple[int, list[int], list[tuple[int, int]]]:
        """What the next read asks for: ids above `high`, the young gaps, and (at the late
        pace) the late ranges."""
        self._give_up_gaps(now)
        ranges: list[tuple[int, int]] = []
        if self.late and now - self._late_read_at >= LATE_READ_EVERY_S:
            self._late_read_at = now
            keep_until = now - runtime_settings.EVENT_LATE_WAIT.total_seconds()
            self.late = [hole for hole in self.late if hole[2] >= keep_until]
            ranges = [(first, last) for first, last, _ in self.late]
        return self.high, list(self.gaps), ranges

    def take(self, rows: Iterable[Row], now: float) -> list[Row]:
        """The rows not seen before, in the order read; holes opened and filled."""
        fresh = []
        for row in rows:
            if row.id in self.gaps:
                del self.gaps[row.id]
            elif row.id > self.high:
                if row.id - self.high - 1 <= MAX_GAP:
                    for missing in range(self.high + 1, row.id):
                        self.gaps[missing] = now
                elif row.id - self.high > 1:
                    self._late_add(self.high + 1, row.id - 1, now)
                self.high = row.id
            elif not self._late_found(row.id):
                continue
            fresh.append(row)
        return fresh

    def _give_up_gaps(self, now: float) -> None:
        """Gaps older than EVENT_GAP_WAIT become late ranges (a run of ids, one range)."""
        give_up = now - runtime_settings.EVENT_GAP_WAIT.total_seconds()
        for missing in sorted(i for i, since in self.gaps.items() if since < give_up):
            del self.gaps[missing]
            if self.late and self.late[-1][1] == missing - 1 and self.late[-1][2] == now:
                self.late[-1] = (self.late[-1][0], missing, now)
            else:
                self._late_add(missing, missing, now)

    def _late_add(self, first: int, last: int, now: float) -> None:
        self.late.append((first, last, now))
        if len(self.late) > MAX_LATE_RANGES:
            del self.late[0]  # the oldest: left to the sockets' re-check

    def _late_found(self, row_id: int) -> bool:
        """Whether a row below `high` fills a late hole (which is then cut around it)."""
        for index, (first, last, since) in enumerate(self.late):
            if first <= row_id <= last:
                parts = [(a, b, since) for a, b in ((first, row_id - 1), (row_id + 1, last)) if a <= b]
                self.late[index:index + 1] = parts
                return True
        return False
