"""Baselines: (a) a Channels consumer that accepts with no checks, on the same settings;
(b) the floor of a revocation: sockets that say they are ready and are closed with 4409
when `POST /close-all` reaches their process, with no log, no database and no check in
between. What the product takes beyond (b) is its own; (b) itself is daphne, autobahn and
the benchmark's client closing that many sockets on this machine."""

import asyncio
import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "symphainy.settings")
django.setup()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

HELD: set["HeldConsumer"] = set()


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


async def close_all(scope, receive, send) -> None:
    """`POST /close-all`: every held socket of this process is closed with 4409, each in a
    task of its own (as the product's tail does), and the request answered at once."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/close-all":
        for consumer in list(HELD):
            asyncio.ensure_future(consumer.close(code=4409))
        status = 204
    else:
        status = 404
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b""})


application = ProtocolTypeRouter({
    "http": close_all,
    "websocket": URLRouter([path("bare", BareConsumer.as_asgi()), path("held", HeldConsumer.as_asgi())]),
})
