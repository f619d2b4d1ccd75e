"""Concurrent password hashing is bounded per process: a login flood waits in a short
queue or is answered 503 with Retry-After, never hashes without limit."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from rest_framework.test import APIClient

from accounts.passwords import password_hashing_slot
from tests import factories

pytestmark = pytest.mark.django_db


def _bound(settings, *, concurrency: int, queue: int, wait_s: float) -> None:
    settings.SYMPHAINY = {
        **settings.SYMPHAINY,
        "LOGIN_HASH_CONCURRENCY": concurrency, "LOGIN_HASH_QUEUE": queue, "LOGIN_HASH_WAIT": timedelta(seconds=wait_s),
    }


def _hold_slot() -> tuple[threading.Event, threading.Event, threading.Thread]:
    """Another request holding the only hashing slot until told to let go."""
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with password_hashing_slot():
            holding.set()
            release.wait(30)

    thread = threading.Thread(target=hold)
    thread.start()
    assert holding.wait(10)
    return holding, release, thread


def test_a_login_over_the_bound_with_no_queue_is_503_with_retry_after(settings):
    _bound(settings, concurrency=1, queue=0, wait_s=5)
    user = factories.make_user()
    _, release, thread = _hold_slot()
    try:
        response = APIClient().post("/api/auth/login", {"email": user.email, "password": factories.PASSWORD}, format="json")
    finally:
        release.set()
        thread.join()
    assert response.status_code == 503
    assert response.json()["error"] == "overloaded"
    assert int(response["Retry-After"]) >= 1


@pytest.mark.django_db(transaction=True)  # the login runs in another thread: it must see the user
def test_a_queued_login_goes_through_once_a_slot_frees(settings):
    _bound(settings, concurrency=1, queue=5, wait_s=30)
    user = factories.make_user()
    _, release, thread = _hold_slot()
    answers: list[int] = []

    def login() -> None:
        answers.append(
            APIClient().post("/api/auth/login", {"email": user.email, "password": factories.PASSWORD},
                             format="json").status_code
        )

    waiter = threading.Thread(target=login)
    waiter.start()
    waiter.join(0.2)  # it waits for the slot rather than hashing alongside the holder
    still_waiting = waiter.is_alive()
    release.set()
    thread.join()
    waiter.join(30)
    assert still_waiting and answers == [200]


def test_a_wait_past_the_limit_is_503(settings):
    _bound(settings, concurrency=1, queue=5, wait_s=0.05)
    user = factories.make_user()
    _, release, thread = _hold_slot()
    try:
        response = APIClient().post("/api/auth/login", {"email": user.email, "password": factories.PASSWORD}, format="json")
    finally:
        release.set()
        thread.join()
    assert response.status_code == 503
