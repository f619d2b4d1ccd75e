"""Baselines: (a) a Channels consumer that accepts with no checks, on the same settings;
(b) the floor of a revocation: sockets that say they are ready and are closed with 4409
when `POST /close-all` reaches their process, with no log, no database and no check in
between. What the product takes beyond (b) is its own; (b) itself is daphne, autobahn and
the benchmark's client closing that many sockets on this machine; (c) the floor of agent
answers (`/tokens?group=<name>`): an `agent.message` streams the echo agent's words, one
`agent.token` frame each (the product's frame, with its timestamp) to every socket of the
group on this process, then `agent.completed`; no database, no row, no check; `ping` is
answered `pong`; over BARE_ANSWERS_PER_GROUP answers in flight, a `too_many_answers` error;
(d) the floor of a rolling restart (`/restart`, bench/restart.py `--how floor`): a socket is
accepted with no check and answered with a `session.ready` carrying only what the client
reads (`seq` 0, the epoch `floor` on both processes, `recovered` true when it came with
`since=`); nothing is forwarded, so a floor run counts no lost or duplicated events. On
SIGTERM the process drains as the product does, minus the product's own work: it stops
listening, closes every `/restart` socket with `server.restart` then 1012 through the
product's `realtime.drain.sockets_close` (the same shuffle, the same spread over the same
window, the same `reconnect_hint_ms`), waits for the closes and exits; `/ready` answers 503
from the first moment. No lease, no connection records, no hand-over, no loops to stop.

The processes are started as the product's are, `python -m symphainy.serve
bench.bare:application`, so the floor has the product's daphne (the listen backlog, 1012
close frames, which autobahn would refuse; the FIN after an unanswered close; no per-socket
pformat): a plain daphne with a signal handler of its own would measure a different
transport. `symphainy.serve` runs `realtime.drain.process_started` when the reactor starts
and `realtime.drain.drain` on SIGTERM, both looked up at call time; this module, the
process's application, puts the floor's in their place below (the other routes hold no
`/restart` socket, so they only lose the product's lease and database steps)."""

import asyncio
import contextlib
import json
import os
import time
from datetime import datetime, timezone
from urllib.parse import parse_qs

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "symphainy.settings")
django.setup()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from core.exceptions import CloseCode  # noqa: E402
from realtime import drain  # noqa: E402
from realtime.protocol import frame_dumps, server_restart  # noqa: E402

HELD: set["HeldConsumer"] = set()
GROUPS: dict[str, set["TokensConsumer"]] = {}
TOKEN_DELAY_S = float(os.environ.get("AGENT_TOKEN_DELAY_SECONDS", "0.02"))
# Answers in flight per group, over it a `too_many_answers` error frame (the flood's floor).
ANSWERS_PER_GROUP = int(os.environ.get("BARE_ANSWERS_PER_GROUP", "1000000"))
ANSWERS: dict[str, set[asyncio.Task]] = {}


class BareConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        offered = self.scope.get("subprotocols") or []
        await self.accept(subprotocol="symphainy.v1" if "symphainy.v1" in offered else None)


class HeldConsumer(BareConsumer):
    async def connect(self) -> None:
        await super().connect()
        HELD.add(self)
        await self.send(text_data='{"type":"ready"}')

    async def disconnect(self, code: int) -> None:
        HELD.discard(self)


class TokensConsumer(BareConsumer):
    async def connect(self) -> None:
        await super().connect()
        query = parse_qs(self.scope.get("query_string", b"").decode())
        self.group = query.get("group", ["-"])[0]
        GROUPS.setdefault(self.group, set()).add(self)
        await self.send(text_data='{"type":"session.ready"}')

    async def disconnect(self, code: int) -> None:
        GROUPS.get(self.group, set()).discard(self)

    async def receive(self, text_data=None, bytes_data=None) -> None:
        message = json.loads(text_data)
        if message["type"] == "ping":
            await self.send(text_data='{"type":"pong"}')
        elif message["type"] == "agent.message":
            answers = ANSWERS.setdefault(self.group, set())
            if len(answers) >= ANSWERS_PER_GROUP:
                await self.send(text_data='{"type":"error","code":"too_many_answers"}')
                return
            task = asyncio.ensure_future(self.answer(message["payload"]["text"]))
            answers.add(task)
            task.add_done_callback(answers.discard)

    async def answer(self, text: str) -> None:
        base = {"conversation_id": "bench", "message_id": os.urandom(8).hex()}
        words = text.split()
        await self.group_send("agent.started", base)
        for index, word in enumerate(words):
            await asyncio.sleep(TOKEN_DELAY_S)
            token = word.upper() + (" " if index < len(words) - 1 else "")
            await self.group_send("agent.token", {**base, "index": index, "token": token})
        await self.group_send("agent.completed", {**base, "text": text.upper()})

    async def group_send(self, kind: str, data: dict) -> None:
        frame = json.dumps({"type": "runtime_event", "event_type": kind, "data": data,
                            "timestamp": datetime.now(timezone.utc).isoformat()})
        for consumer in list(GROUPS.get(self.group, ())):
            await consumer.send(text_data=frame)


class RestartConsumer(BareConsumer):
    """(d): `session.ready` at once; `restart()` is what the product's drain calls."""

    ready = False

    async def connect(self) -> None:
        await super().connect()
        if STOPPING:  # a handshake that came in as the process began to stop, as the product does
            await self.close(code=int(CloseCode.SERVICE_RESTART))
            return
        drain.socket_opened(self)
        resumed = b"since=" in self.scope.get("query_string", b"")
        await self.send(text_data=frame_dumps({"type": "session.ready", "seq": 0, "epoch": EPOCH,
                                               **({"recovered": True} if resumed else {})}))
        self.ready = True

    async def disconnect(self, code: int) -> None:
        drain.socket_closed(self)

    async def restart(self, *, reconnect_after_ms: int) -> None:
        if self.ready:
            with contextlib.suppress(Exception):  # the peer may be gone; the close says the rest
                await self.send(text_data=frame_dumps(server_restart(reconnect_after_ms)))
        with contextlib.suppress(Exception):
            await self.close(code=int(CloseCode.SERVICE_RESTART))


STOPPING = False
EPOCH = "floor"  # one log for both processes, as the product's database is


async def floor_drain(*, stop_accepting, in_flight=lambda: 0, cut=lambda: 0) -> None:
    """The product's drain (realtime.drain.drain) without its database and loops: stop
    listening, the same closes over the same window within the same bound, then the cut."""
    global STOPPING
    if STOPPING:
        return
    STOPPING = True
    began = time.monotonic()
    window, work = drain.drain_budget()
    await stop_accepting()
    until = drain.closes_until(begun=time.monotonic(), window=window, deadline=began + work)
    await drain.sockets_close(window=window, until=until)
    while in_flight() and time.monotonic() < until:
        await asyncio.sleep(0.05)
    cut()
    while in_flight() and time.monotonic() < began + work:
        await asyncio.sleep(0.05)


async def floor_started() -> None:
    """Nothing to take: the product takes its lease here."""


drain.drain = floor_drain
drain.process_started = floor_started


async def close_all(scope, receive, send) -> None:
    """`POST /close-all`: every held socket of this process is closed with 4409, each in a
    task of its own (as the product's tail does), and the request answered at once."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/close-all":
        for consumer in list(HELD):
            asyncio.ensure_future(consumer.close(code=4409))
        status = 204
    elif scope["path"] == "/ready":  # (d): as the product's, 503 from the drain's first moment
        status = 503 if STOPPING else 200
    else:
        status = 404
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b""})


application = ProtocolTypeRouter({
    "http": close_all,
    "websocket": URLRouter([path("bare", BareConsumer.as_asgi()), path("held", HeldConsumer.as_asgi()),
                            path("tokens", TokensConsumer.as_asgi()), path("restart", RestartConsumer.as_asgi())]),
})
