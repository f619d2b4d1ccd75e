"""realtime.cursor: which ids of the event log a tail has read, and the holes below them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest

from realtime.cursor import LATE_READ_EVERY_S, MAX_GAP, LogCursor


@dataclass
class Row:
    id: int


@pytest.fixture(autouse=True)
def _waits(settings):
    settings.SYMPHAINY = {**settings.SYMPHAINY, "EVENT_GAP_WAIT": timedelta(seconds=5),
                          "EVENT_LATE_WAIT": timedelta(seconds=60)}


def ids(rows) -> list[int]:
    return [row.id for row in rows]


def test_a_hole_is_read_again_at_every_wake_up_while_young():
    cursor = LogCursor(0)
    assert ids(cursor.take([Row(1), Row(3)], now=0.0)) == [1, 3]
    assert cursor.pending(now=1.0) == (3, [2], [])
    assert ids(cursor.take([Row(2)], now=1.0)) == [2]
    assert cursor.pending(now=2.0) == (3, [], [])


def test_an_old_hole_is_read_at_the_late_pace_and_its_row_delivered_once():
    cursor = LogCursor(0)
    cursor.take([Row(1), Row(4)], now=0.0)
    assert cursor.pending(now=6.0) == (4, [], [(2, 3)])
    assert cursor.pending(now=6.5)[2] == [], "read again before LATE_READ_EVERY_S"
    assert cursor.pending(now=6.0 + LATE_READ_EVERY_S)[2] == [(2, 3)]
    assert ids(cursor.take([Row(3)], now=7.5)) == [3]
    assert ids(cursor.take([Row(3)], now=7.6)) == [], "a late row delivered twice"
    assert cursor.late == [(2, 2, 6.0)]


def test_a_hole_too_wide_to_list_is_a_range_at_once():
    cursor = LogCursor(0)
    cursor.take([Row(MAX_GAP + 10)], now=0.0)
    assert cursor.gaps == {}
    assert cursor.pending(now=0.0)[2] == [(1, MAX_GAP + 9)]
    assert ids(cursor.take([Row(500)], now=0.1)) == [500]


def test_a_hole_older_than_the_late_wait_is_given_up():
    cursor = LogCursor(0)
    cursor.take([Row(2)], now=0.0)
    assert cursor.pending(now=6.0)[2] == [(1, 1)]
    assert cursor.pending(now=6.0 + 61)[2] == []
    assert cursor.late == []
    assert ids(cursor.take([Row(1)], now=70.0)) == [], "a row below the mark that fills no hole"
