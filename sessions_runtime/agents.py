"""Agent messages: the interface a real agent plugs into, the built-in echo agent, and the
run of an answer on this process.

An agent is an async generator `agent(message: AgentMessage) -> AsyncIterator[str]`
named in `SYMPHAINY["AGENT_HANDLER"]` (docs/extending.md). An answer belongs to the
session, not to the socket that asked: its row and its recorded events are in
`sessions_runtime.answers`; here each string the agent yields is sent at once as a live
`agent.token` with its index, and one keeper per event loop writes the text so far every
AGENT_SNAPSHOT_INTERVAL, renews the leases and, twice a second, reads whether an answer
was cancelled, ended elsewhere or is in a session no longer active; then the agent's
generator is closed. The conversation is kept in the session's state surface, namespace
`conversation`. The protocol: docs/protocol.md#agent-answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

from channels.db import database_sync_to_async
from django.utils.module_loading import import_string

from accounts.models import Permission
from core.caller import Caller
from core.conf import runtime_settings
from core.events import live_event_send
from core.exceptions import InvalidRequest, NotFound, TooManyAnswers, VersionConflict, error_for_client
from core.process import server_instance_id
from core.tasks import background, tasks_stop
from sessions_runtime.answers import (
    AGENT_CANCELLED,
    AGENT_COMPLETED,
    AGENT_FAILED,
    AGENT_TOKEN,
    CANCEL,
    FAILED_ERROR,
    FAILED_INTERRUPTED,
    FAILED_SESSION_ENDED,
    GO_ON,
    GONE,
    SESSION_OVER,
    Progress,
    agent_answer_cancel_request,
    agent_answer_finish,
    agent_answer_start,
    agent_answers_in_flight,
    agent_answers_step,
    answer_failure,
)
from sessions_runtime.models import AgentAnswer
from sessions_runtime.selectors import AGENT_MESSAGE, access_require_permission
from sessions_runtime.state import CONVERSATION_NAMESPACE, state_backend, state_key, state_size

logger = logging.getLogger(__name__)
# Of the protocol: a conversation id is a client's own short name for it.
MAX_CONVERSATION_ID_LENGTH = 64
# Compare-and-set rounds before a conversation write gives up (each lost round means
# another writer of the same session state got there first).
CONVERSATION_WRITE_ATTEMPTS = 5
# Of the contract: `agent.cancel` stops the agent within one second, on whatever process
# runs it. The keeper reads the cancel flags (and renews the leases) this often.
ANSWER_CHECK_S = 0.5


@dataclass(frozen=True, slots=True)
class AgentMessage:
    text: str
    conversation_id: str
    session_id: uuid.UUID
    user_id: uuid.UUID
    tenant_id: uuid.UUID
    context: dict[str, Any] = field(default_factory=dict)
    history: tuple[dict[str, Any], ...] = ()


Agent = Callable[[AgentMessage], AsyncIterator[str]]


async def echo_agent(message: AgentMessage) -> AsyncIterator[str]:
    """The built-in agent: streams the message back word by word, upper-cased."""
    words = message.text.split()
    for index, word in enumerate(words):
        await asyncio.sleep(runtime_settings.AGENT_TOKEN_DELAY)
        yield word.upper() + (" " if index < len(words) - 1 else "")


def agent_message_authorize(caller: Caller) -> None:
    """An agent message writes the conversation into session state: it takes the write
    permission (a viewer may read, not talk to the agent)."""
    access_require_permission(caller=caller, permission=Permission.WRITE, what=AGENT_MESSAGE)


def agent_message_parse(message: dict[str, Any], *, caller: Caller) -> tuple[str, dict[str, Any], str]:
    """(text, context, conversation_id) from an `agent.message` frame that `caller` may
    send; InvalidRequest or PermissionDenied (an error frame) otherwise."""
    agent_message_authorize(caller)
    payload = message.get("payload")
    if not isinstance(payload, dict):
        raise InvalidRequest("'payload' must be an object with 'text'.")
    text, context = payload.get("text"), payload.get("context", {})
    longest = runtime_settings.AGENT_MESSAGE_MAX_CHARS
    if not isinstance(text, str) or not text.strip() or len(text) > longest:
        raise InvalidRequest(f"'payload.text' must be 1 to {longest} characters.")
    if not isinstance(context, dict):
        raise InvalidRequest("'payload.context' must be an object.")
    conversation_id = message.get("conversation_id") or payload.get("conversation_id") or str(uuid.uuid4())
    if not isinstance(conversation_id, str) or len(conversation_id) > MAX_CONVERSATION_ID_LENGTH:
        raise InvalidRequest(f"'conversation_id' must be a string of at most {MAX_CONVERSATION_ID_LENGTH} characters.")
    return text, context, conversation_id


def conversation_history(*, tenant_id: uuid.UUID, session_id: uuid.UUID, conversation_id: str) -> tuple[dict, ...]:
    key = state_key(tenant_id=tenant_id, session_id=session_id, namespace=CONVERSATION_NAMESPACE)
    return tuple(state_backend().read(key).data.get(conversation_id, []))


def conversations_of(*, session: Any) -> list[dict[str, Any]]:
    """The session's conversations, most recently used first: each one's id, turns and last
    turn's time, and how many of its answers are in flight (a read for REST)."""
    key = state_key(tenant_id=session.tenant_id, session_id=session.pk, namespace=CONVERSATION_NAMESPACE)
    data = state_backend().read(key).data
    in_flight: dict[str, int] = {}
    for conversation_id in AgentAnswer.objects.filter(session_id=session.pk).values_list("conversation_id", flat=True):
        in_flight[conversation_id] = in_flight.get(conversation_id, 0) + 1
    found = []
    for conversation_id in set(data) | set(in_flight):
        turns = data.get(conversation_id) or []
        last = turns[-1].get("at") if turns and isinstance(turns[-1], dict) else None
        found.append({"conversation_id": conversation_id, "turns": len(turns), "last_at": last,
                      "answers_in_flight": in_flight.get(conversation_id, 0)})
    return sorted(found, key=lambda c: (c["answers_in_flight"] == 0, -(c["last_at"] or 0), c["conversation_id"]))


def conversation_of(*, session: Any, conversation_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A conversation's turns, oldest first, and its answers in flight (the text so far, as
    of their last write): what a frontend shows after a reload, before the socket's
    snapshot and tokens bring the rest. NotFound for a conversation with neither."""
    turns = list(conversation_history(
        tenant_id=session.tenant_id, session_id=session.pk, conversation_id=conversation_id
    ))
    in_flight = [
        {"message_id": str(row["pk"]), "question": row["question"], "text": row["text"],
         "next_index": row["next_index"]}
        for row in agent_answers_in_flight(session_id=session.pk) if row["conversation_id"] == conversation_id
    ]
    if not turns and not in_flight:
        raise NotFound("No such conversation in this session.")
    return turns, in_flight


def _conversations_bounded(data: dict[str, Any], *, current: str, limit: int) -> dict[str, Any] | None:
    """Drop the least recently used conversations, then the current one's oldest turns,
    until the document fits STATE_MAX_BYTES; None when even the newest exchange does not.
    Recency is each conversation's last `at`: jsonb keeps no key order to go by."""
    def last_used(conversation_id: str) -> float:
        turns = data[conversation_id]
        return float(turns[-1].get("at", 0)) if turns and isinstance(turns[-1], dict) else 0.0

    others = sorted((cid for cid in data if cid != current), key=last_used)
    while state_size(data) > limit and others:
        del data[others.pop(0)]
    while state_size(data) > limit and len(data[current]) > 2:
        data[current] = data[current][2:]  # one user turn and its reply at a time
    return data if state_size(data) <= limit else None


def conversation_append(
    *, tenant_id: uuid.UUID, session_id: uuid.UUID, conversation_id: str, turns: list[dict[str, Any]]
) -> None:
    """Append turns with compare-and-set, retrying when another writer got there first.
    The document stays within STATE_MAX_BYTES like every other state write."""
    key = state_key(tenant_id=tenant_id, session_id=session_id, namespace=CONVERSATION_NAMESPACE)
    backend = state_backend()
    at = time.time()
    stamped = [{**turn, "at": at} for turn in turns]
    for _ in range(CONVERSATION_WRITE_ATTEMPTS):
        document = backend.read(key)
        data = dict(document.data)
        data[conversation_id] = (list(data.get(conversation_id, [])) + stamped)[-runtime_settings.AGENT_HISTORY_MAX_TURNS:]
        bounded = _conversations_bounded(data, current=conversation_id, limit=runtime_settings.STATE_MAX_BYTES)
        if bounded is None:
            logger.warning("conversation %s: one exchange exceeds STATE_MAX_BYTES; not saved", conversation_id)
            return
        try:
            backend.write(key, bounded, expected_version=document.version)
            return
        except VersionConflict:
            continue
    logger.warning("conversation %s not saved after repeated conflicts", conversation_id)



# --- The answers this process runs ---------------------------------------------------------
@dataclass(eq=False, slots=True)
class RunningAnswer:
    """One answer run on this process: the tokens so far, how many of them its row holds,
    and why it was stopped (None while it runs)."""

    answer_id: uuid.UUID
    session_id: uuid.UUID
    conversation_id: str
    loop: asyncio.AbstractEventLoop
    user_id: uuid.UUID | None = None
    tokens: list[str] = field(default_factory=list)
    written: int = 0
    stop: str | None = None
    task: asyncio.Task | None = None
    ending: bool = False  # its terminal event is being written: its row may be gone

    @property
    def base(self) -> dict[str, str]:
        return {"conversation_id": self.conversation_id, "message_id": str(self.answer_id)}

    def progress(self) -> Progress:
        """What the next write adds: the tokens since the last one (the whole text after a
        write that failed, `written` then being 0), so a long answer costs its growth."""
        start, self.written = self.written, len(self.tokens)
        return Progress(answer_id=self.answer_id, text="".join(self.tokens[start:]), next_index=self.written,
                        append=start > 0)

    def stop_with(self, reason: str) -> None:
        """Stop the agent: its task is cancelled, and the run closes the generator."""
        if self.stop is None and self.task is not None and not self.task.done():
            self.stop = reason
            self.task.cancel()


_running: dict[uuid.UUID, RunningAnswer] = {}
_starting = 0  # starts waiting for their row: counted against the process bound
_keepers: dict[asyncio.AbstractEventLoop, asyncio.Task] = {}


def answers_running() -> list[RunningAnswer]:
    """This process's answers in flight (on any of its event loops)."""
    for answer_id in [key for key, run in _running.items() if run.loop.is_closed()]:
        del _running[answer_id]
    return list(_running.values())


def _user_answers_here(user_id: uuid.UUID | None) -> int:
    """The user's answers on this process whose rows certainly still count in the database
    (not ending, not ended elsewhere): never more than the database's count, so at the
    bound a start is refused without the database's transaction. A flood of messages over
    the bound otherwise queued one locking transaction each on Channels' one database
    thread (bench/README.md, the answers flood)."""
    return sum(1 for run in answers_running() if run.user_id == user_id and not run.ending and run.stop != GONE)


async def agent_message_start(*, caller: Caller, text: str, context: dict[str, Any], conversation_id: str) -> uuid.UUID:
    """Start an answer in the caller's session, run on this process; returns its message id.
    Refused (nothing recorded, nothing run) without the write permission, in a session no
    longer active, or over the per-user or per-process bound."""
    global _starting
    agent_message_authorize(caller)  # before any event: a refused message leaves no trace
    if len(answers_running()) + _starting >= runtime_settings.AGENT_ANSWERS_PER_PROCESS:
        raise TooManyAnswers("This server runs too many agent answers; try again shortly.")
    if _user_answers_here(caller.user_id) >= runtime_settings.AGENT_ANSWERS_PER_USER:
        raise TooManyAnswers(details={"limit": runtime_settings.AGENT_ANSWERS_PER_USER})
    _starting += 1
    try:
        answer = await database_sync_to_async(agent_answer_start)(
            caller=caller, conversation_id=conversation_id, question=text, server_instance=server_instance_id()
        )
    finally:
        _starting -= 1
    loop = asyncio.get_running_loop()
    run = RunningAnswer(answer_id=answer.pk, session_id=caller.session_id, conversation_id=conversation_id, loop=loop,
                        user_id=caller.user_id)
    _running[run.answer_id] = run
    run.task = background(_answer_run(run, caller=caller, text=text, context=context))
    keeper = _keepers.get(loop)
    if keeper is None or keeper.done():
        for old in [old for old in _keepers if old.is_closed()]:
            del _keepers[old]
        _keepers[loop] = background(_keep(loop))
    return answer.pk


async def agent_message_cancel(*, caller: Caller, message_id: Any) -> None:
    """`agent.cancel`: flag the answer (any process's); one of this process stops at once."""
    agent_message_authorize(caller)
    answer = await database_sync_to_async(agent_answer_cancel_request)(caller=caller, message_id=message_id)
    run = _running.get(answer.pk)
    if run is not None:
        run.stop_with(CANCEL)


async def agent_message_run(*, caller: Caller, text: str, context: dict[str, Any], conversation_id: str) -> None:
    """Start an answer and wait for it to end (tests, scripts)."""
    answer_id = await agent_message_start(caller=caller, text=text, context=context, conversation_id=conversation_id)
    run = _running.get(answer_id)
    if run is not None and run.task is not None:
        await asyncio.wait({run.task})


async def _answer_run(run: RunningAnswer, *, caller: Caller, text: str, context: dict[str, Any]) -> None:
    """Run the agent to the answer's one terminal event. A stop (cancel, the session's end,
    the row gone, a drain) arrives as this task's cancellation; the generator is then
    closed, so the agent's own `finally` (an HTTP stream's close) runs."""
    session_id = run.session_id
    generator: Any = None
    failure: Exception | None = None
    try:
        try:
            history = await database_sync_to_async(conversation_history)(
                tenant_id=caller.tenant_id, session_id=session_id, conversation_id=run.conversation_id
            )
            agent: Agent = import_string(runtime_settings.AGENT_HANDLER)
            generator = agent(AgentMessage(
                text=text, conversation_id=run.conversation_id, session_id=session_id,
                user_id=caller.user_id, tenant_id=caller.tenant_id, context=context, history=history,
            ))
            async for token in generator:
                if run.stop is not None:  # an agent that swallowed its cancellation
                    break
                token = token if isinstance(token, str) else str(token)
                run.tokens.append(token)
                frame = {**run.base, "index": len(run.tokens) - 1, "token": token}
                await live_event_send(session_id, AGENT_TOKEN, frame)
        except asyncio.CancelledError:
            if run.stop is None:  # not ours (the loop is going away): end it as interrupted
                run.stop = FAILED_INTERRUPTED
        except Exception as exc:  # noqa: BLE001 - an agent's failure is reported, not raised
            logger.warning("agent failed in session %s", session_id, exc_info=True)
            failure = exc
        finally:
            if generator is not None:
                try:
                    await generator.aclose()
                except Exception:  # noqa: BLE001 - an agent that fails while closing is closed
                    logger.warning("agent failed while closing in session %s", session_id, exc_info=True)
        await _answer_end(run, caller=caller, question=text, failure=failure)
    finally:
        _running.pop(run.answer_id, None)


async def _answer_end(run: RunningAnswer, *, caller: Caller, question: str, failure: Exception | None) -> None:
    run.ending = True
    reply = "".join(run.tokens)
    if run.stop == GONE:
        return  # ended elsewhere (the session's end, or the sweep): its event is recorded
    if run.stop is None and failure is None:
        kind, data = AGENT_COMPLETED, {**run.base, "text": reply, "tokens": len(run.tokens)}
    elif run.stop == CANCEL:
        kind, data = AGENT_CANCELLED, {**run.base, "text": reply}
    else:
        reason = FAILED_ERROR if failure is not None else FAILED_SESSION_ENDED if run.stop == SESSION_OVER else FAILED_INTERRUPTED
        error = error_for_client(failure, generic="The agent failed.") if failure is not None else answer_failure(reason)
        kind, data = AGENT_FAILED, {**run.base, "error": error, "reason": reason}
    if kind in (AGENT_COMPLETED, AGENT_CANCELLED):
        turn = {"role": "agent", "text": reply, "message_id": str(run.answer_id)}
        if kind == AGENT_CANCELLED:
            turn["cancelled"] = True
        await database_sync_to_async(conversation_append)(
            tenant_id=caller.tenant_id, session_id=run.session_id, conversation_id=run.conversation_id,
            turns=[{"role": "user", "text": question}, turn],
        )
    await database_sync_to_async(agent_answer_finish)(answer_id=run.answer_id, session_id=run.session_id, kind=kind, data=data)


async def _keep(loop: asyncio.AbstractEventLoop) -> None:
    """While this loop runs answers: every AGENT_SNAPSHOT_INTERVAL write the text of those
    with new tokens; every ANSWER_CHECK_S renew every lease and act on what the rows say."""
    checked = loop.time()
    task = asyncio.current_task()
    while True:
        # A cancel() some library swallowed during the last step (one that turns it into a
        # connection error, which the step takes for an outage) still ends the loop: the
        # task keeps counting it until it is uncancelled (as realtime/heartbeat.py does).
        if task is not None and task.cancelling():
            raise asyncio.CancelledError
        runs = [run for run in answers_running() if run.loop is loop and run.stop is None]
        if not runs and not any(run.loop is loop for run in _running.values()):
            return
        await asyncio.sleep(runtime_settings.AGENT_SNAPSHOT_INTERVAL.total_seconds())
        check = loop.time() - checked >= ANSWER_CHECK_S
        progress = [run.progress() for run in runs if len(run.tokens) > run.written]
        ids = [run.answer_id for run in runs] if check else []
        if not progress and not ids:
            continue
        try:
            verdicts = await database_sync_to_async(agent_answers_step)(progress=progress, check=ids)
        except Exception:  # noqa: BLE001 - a failed step is retried at the next; the lease outlasts a few
            logger.warning("could not write agent answers' progress; will retry", exc_info=True)
            for item in progress:  # written again whole at the next step
                if (run := _running.get(item.answer_id)) is not None:
                    run.written = 0
            continue
        if check:
            checked = loop.time()
        for answer_id, verdict in verdicts.items():
            run = _running.get(answer_id)
            if run is not None and verdict != GO_ON:
                run.stop_with(verdict)


async def agent_answers_interrupt_local(*, timeout: float = 5.0) -> int:
    """A drain: stop every answer this event loop runs; each ends as `interrupted` (its
    terminal event recorded) within `timeout`. Returns how many were stopped."""
    loop = asyncio.get_running_loop()
    runs = [run for run in answers_running() if run.loop is loop]
    for run in runs:
        run.stop_with(FAILED_INTERRUPTED)
    tasks = [run.task for run in runs if run.task is not None]
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            logger.error("agent answer task %r did not end when interrupted", task)
    keeper = _keepers.pop(loop, None)
    if keeper is not None:
        await tasks_stop([keeper], timeout=timeout)
    return len(runs)
