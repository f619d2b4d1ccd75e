"""Agent answers in the database: the row of an answer in flight and its one terminal event.

An answer starts with its row and its recorded `agent.started`, in one transaction, under
the per-user bound. It ends when its row is deleted, in the same transaction as its one
terminal event (`agent.completed`, `agent.failed` or `agent.cancelled`): whoever deletes
the row (the running process, the session's end, the sweep of a dead process's answers)
records the event, and nobody else can. What runs an answer is `sessions_runtime.agents`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable

from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from accounts.models import User
from core.caller import Caller
from core.conf import runtime_settings
from core.events import Event, events_record, runtime_event_publish
from core.exceptions import NotFound, SessionNotWritable, TooManyAnswers
from core.ids import uuid_parse
from sessions_runtime.models import AgentAnswer, RuntimeSession

AGENT_STARTED = "agent.started"
AGENT_TOKEN = "agent.token"
AGENT_SNAPSHOT = "agent.snapshot"
AGENT_COMPLETED = "agent.completed"
AGENT_FAILED = "agent.failed"
AGENT_CANCELLED = "agent.cancelled"
TERMINAL_KINDS = frozenset({AGENT_COMPLETED, AGENT_FAILED, AGENT_CANCELLED})

# `agent.failed`'s reasons (the contract's).
FAILED_ERROR = "error"
FAILED_INTERRUPTED = "interrupted"
FAILED_SESSION_ENDED = "session_ended"
_FAILURES = {
    FAILED_INTERRUPTED: {"type": "Interrupted", "message": "The server process running the agent stopped."},
    FAILED_SESSION_ENDED: {"type": "SessionEnded", "message": "The session ended."},
}


def answer_failure(reason: str) -> dict[str, str]:
    """The `error` of an `agent.failed` that no agent raised."""
    return dict(_FAILURES[reason])


def _lease_end(now: datetime) -> datetime:
    return now + runtime_settings.AGENT_ANSWER_LEASE


@transaction.atomic
def agent_answer_start(*, caller: Caller, conversation_id: str, question: str, server_instance: str) -> AgentAnswer:
    """The row of a new answer and its recorded `agent.started`, if the session is active
    and the user has fewer than AGENT_ANSWERS_PER_USER answers in flight. The user's row
    is locked (on PostgreSQL; SQLite takes one writer at a time anyway), so two starts
    cannot both pass the bound."""
    User.objects.select_for_update().filter(pk=caller.user_id).values_list("pk", flat=True).first()
    if not RuntimeSession.objects.usable().filter(pk=caller.session_id).exists():
        raise SessionNotWritable()
    if AgentAnswer.objects.filter(user_id=caller.user_id).count() >= runtime_settings.AGENT_ANSWERS_PER_USER:
        raise TooManyAnswers(details={"limit": runtime_settings.AGENT_ANSWERS_PER_USER})
    now = timezone.now()
    answer = AgentAnswer.objects.create(
        session_id=caller.session_id, user_id=caller.user_id, tenant_id=caller.tenant_id,
        conversation_id=conversation_id, question=question, server_instance=server_instance,
        lease_expires_at=_lease_end(now), created_at=now,
    )
    started = {"conversation_id": conversation_id, "message_id": str(answer.pk)}
    runtime_event_publish(caller.session_id, AGENT_STARTED, started)
    return answer


@dataclass(frozen=True, slots=True)
class Progress:
    """What the running process writes of one answer at a step."""

    answer_id: uuid.UUID
    text: str  # the whole text so far, or with `append` what follows the row's
    next_index: int
    append: bool = False


# What a step tells the running process about one of its answers.
GO_ON, GONE, CANCEL, SESSION_OVER = "go_on", "gone", "cancel", "session_over"


def agent_answers_step(*, progress: Iterable[Progress], check: Iterable[uuid.UUID] = ()) -> dict[uuid.UUID, str]:
    """Write the text so far of the answers in `progress`, renewing their lease; for the
    answers in `check`, renew the lease too and say whether each goes on, was ended
    elsewhere (its row is gone), was asked to cancel, or is in a session that is no longer
    active. Every write adds one to the row's `writes`, which a snapshot's reader counts on
    (realtime/catchup.py)."""
    now = timezone.now()
    lease = _lease_end(now)
    progress = list(progress)
    if progress:
        _progress_write(progress, lease)
    check = list(check)
    if not check:
        return {}
    written = {item.answer_id for item in progress}
    renew = [answer_id for answer_id in check if answer_id not in written]
    if renew:
        AgentAnswer.objects.filter(pk__in=renew).update(lease_expires_at=lease, writes=F("writes") + 1)
    verdicts = dict.fromkeys(check, GONE)
    usable = set(RuntimeSession.objects.usable(now=now).values_list("pk", flat=True).filter(
        pk__in=AgentAnswer.objects.filter(pk__in=check).values("session_id")
    ))
    for answer_id, session_id, cancel in AgentAnswer.objects.filter(pk__in=check).values_list(
        "pk", "session_id", "cancel_requested"
    ):
        verdicts[answer_id] = SESSION_OVER if session_id not in usable else CANCEL if cancel else GO_ON
    return verdicts


def _progress_write(progress: list[Progress], lease: datetime) -> None:
    """One UPDATE per row, each the same two statements' text with its parameters
    (`executemany`: prepared once, run for every row), in one transaction.

    Written as SQL because the ORM's `bulk_update` builds a CASE expression per row and
    field in Python: with 100 answers streaming, compiling it every AGENT_SNAPSHOT_INTERVAL
    was most of the database thread's time, and that thread holds the GIL the event loop
    needs to send the tokens (bench/README.md, "Agent answers as streams")."""
    meta = AgentAnswer._meta
    table, quote = connection.ops.quote_name(meta.db_table), connection.ops.quote_name
    pk, lease_field = meta.pk, meta.get_field("lease_expires_at")
    db_lease = lease_field.get_db_prep_value(lease, connection)
    sets = f"{quote('next_index')} = %s, {quote('writes')} = {quote('writes')} + 1, {quote('lease_expires_at')} = %s"
    where = f"WHERE {quote(pk.column)} = %s"
    grouped: dict[bool, list[tuple[Any, ...]]] = {True: [], False: []}
    for item in progress:
        grouped[item.append].append((item.text, item.next_index, db_lease, pk.get_db_prep_value(item.answer_id, connection)))
    text = quote("text")
    with transaction.atomic(), connection.cursor() as cursor:
        for append, rows in grouped.items():
            if rows:
                value = f"{text} || %s" if append else "%s"
                cursor.executemany(f"UPDATE {table} SET {text} = {value}, {sets} {where}", rows)


@transaction.atomic
def agent_answer_finish(*, answer_id: uuid.UUID, session_id: uuid.UUID, kind: str, data: dict[str, Any]) -> bool:
    """End the answer with its terminal event, unless it has ended already (then False)."""
    deleted, _ = AgentAnswer.objects.filter(pk=answer_id).delete()
    if not deleted:
        return False
    runtime_event_publish(session_id, kind, data)
    return True


def agent_answer_cancel_request(*, caller: Caller, message_id: Any) -> AgentAnswer:
    """Ask for an answer of the caller's session to stop (the running process reads the
    flag within half a second); NotFound for an unknown or finished one."""
    answer_id = uuid_parse(message_id)
    answer = None
    if answer_id is not None:
        answers = AgentAnswer.objects.filter(pk=answer_id, session_id=caller.session_id)
        answer = answers.only("pk", "server_instance").first()
    if answer is None:
        raise NotFound("No answer in flight with this message_id.")
    AgentAnswer.objects.filter(pk=answer.pk).update(cancel_requested=True)
    return answer


def _fail(rows: list[tuple[uuid.UUID, uuid.UUID, str]], *, reason: str) -> int:
    """Delete these answers' rows and record their `agent.failed`: in the caller's transaction."""
    if not rows:
        return 0
    deleted, _ = AgentAnswer.objects.filter(pk__in=[row[0] for row in rows]).delete()
    events_record(
        Event(session_id=session_id, kind=AGENT_FAILED, data={
            "conversation_id": conversation_id, "message_id": str(answer_id), "error": answer_failure(reason),
            "reason": reason,
        })
        for answer_id, session_id, conversation_id in rows
    )
    return deleted


def agent_answers_end(session_ids: Iterable[uuid.UUID]) -> int:
    """The sessions end: their answers in flight fail as `session_ended` (in the end's own
    transaction, before its `session.ended`, so open sockets see the failure first). The
    running process finds the row gone at its next check and closes the agent."""
    rows = list(
        AgentAnswer.objects.select_for_update().filter(session_id__in=list(session_ids))
        .values_list("pk", "session_id", "conversation_id")
    )
    return _fail(rows, reason=FAILED_SESSION_ENDED)


@transaction.atomic
def agent_answers_sweep(*, dead: Iterable[str] = (), now: datetime | None = None) -> int:
    """Answers of the `dead` server processes, and any whose lease ran out (their process
    died without a drain, or is stuck), fail as `interrupted`. Returns how many."""
    lost = Q(lease_expires_at__lt=now or timezone.now()) | Q(server_instance__in=list(dead))
    rows = list(
        AgentAnswer.objects.select_for_update().filter(lost).values_list("pk", "session_id", "conversation_id")
    )
    return _fail(rows, reason=FAILED_INTERRUPTED)


def agent_answers_in_flight(*, session_id: uuid.UUID) -> list[dict[str, Any]]:
    """The session's answers in flight as a snapshot reads them, oldest first."""
    return list(
        AgentAnswer.objects.filter(session_id=session_id)
        .order_by("created_at", "pk")
        .values("pk", "conversation_id", "question", "text", "next_index", "writes", "created_at")
    )


def agent_answers_sessions() -> list[tuple[uuid.UUID, str]]:
    """(session id, message id) of every answer in flight: where a process's tail starts."""
    rows = AgentAnswer.objects.values_list("pk", "session_id")
    return [(session_id, str(answer_id)) for answer_id, session_id in rows]
