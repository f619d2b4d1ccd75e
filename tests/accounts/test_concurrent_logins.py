"""Fifty logins of one user at once, over a real daphne process: every one answers 200 with
a session, none is a 500, and the per-user cap of active sessions holds."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from sessions_runtime.models import EndReason, RuntimeSession, SessionStatus
from tests import factories
from tests.live import running

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]
LOGINS = 50
CAP = 10


# Each login may wait up to 300 s for a hashing slot (below): more than the suite's bound.
@pytest.mark.timeout(600)
def test_fifty_concurrent_logins_of_one_user_keep_the_cap(tmp_path):
    user = factories.make_user()
    # Fifty real Argon2 hashes take 50 x ~150 ms over the process's hashing slots (one per
    # core): the last answer may come many seconds later on a busy machine. The server lets
    # a queued login wait that long, and the client waits for it; nothing is asserted on time.
    env = {
        "THROTTLE_LOGIN_ADDRESS": "1000/min",
        "MAX_ACTIVE_SESSIONS_PER_USER": str(CAP), "LOGIN_HASH_WAIT_SECONDS": "300",
    }
    with running(tmp_path, **env) as server:
        credentials = {"email": user.email, "password": factories.PASSWORD}
        with ThreadPoolExecutor(LOGINS) as pool:
            answers = list(pool.map(lambda _: server.request("POST", "/api/auth/login", credentials, timeout=300), range(LOGINS)))

    statuses = sorted(status for status, _ in answers)
    assert statuses == [200] * LOGINS, statuses
    session_ids = {body["session_id"] for _, body in answers}
    assert len(session_ids) == LOGINS
    sessions = RuntimeSession.objects.filter(user=user)
    assert sessions.count() == LOGINS
    assert sessions.filter(status=SessionStatus.ACTIVE).count() == CAP
    assert sessions.filter(status=SessionStatus.ENDED, end_reason=EndReason.SUPERSEDED).count() == LOGINS - CAP
