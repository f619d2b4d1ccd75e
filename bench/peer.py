"""The peer (what a user might pick instead): the same check — decode the JWT, look the
session up, compare user and tenant — as a Starlette WebSocket endpoint on uvicorn, on the
same database (SQLite through the standard library, or PostgreSQL through psycopg)."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from datetime import datetime, timezone

import jwt
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

SECRET = os.environ.get("JWT_SIGNING_KEY") or os.environ.get(
    "SECRET_KEY", "django-insecure-symphainy-local-development-key-change-me"
)
DATABASE_URL = os.environ.get("DATABASE_URL")
SQLITE_PATH = os.environ.get("SQLITE_PATH")
QUERY = (
    "SELECT user_id, tenant_id, status, expires_at, idle_expires_at FROM sessions_runtime_runtimesession WHERE id = {p}"
)


class Sessions:
    def __init__(self) -> None:
        self._pg = None
        self._lock = asyncio.Lock()

    async def get(self, session_id: str) -> tuple | None:
        if DATABASE_URL:
            import psycopg

            async with self._lock:
                if self._pg is None:
                    self._pg = await psycopg.AsyncConnection.connect(DATABASE_URL, autocommit=True)
                cursor = await self._pg.execute(QUERY.format(p="%s"), (session_id,))
                return await cursor.fetchone()
        return await asyncio.to_thread(self._sqlite, session_id)

    def _sqlite(self, session_id: str) -> tuple | None:
        connection = sqlite3.connect(SQLITE_PATH)
        try:
            return connection.execute(QUERY.format(p="?"), (session_id.replace("-", ""),)).fetchone()
        finally:
            connection.close()


sessions = Sessions()


def _aware(value) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


async def agent(websocket: WebSocket) -> None:
    offered = websocket.scope.get("subprotocols") or []
    token = next((p[len("bearer."):] for p in offered if p.startswith("bearer.")), None)
    await websocket.accept(subprotocol="symphainy.v1" if "symphainy.v1" in offered else None)
    try:
        claims = jwt.decode(token or "", SECRET, algorithms=["HS256"], issuer="symphainy")
        if claims.get("token_type") != "access":
            raise jwt.InvalidTokenError("type")
    except jwt.InvalidTokenError:
        await websocket.close(code=4401)
        return
    row = await sessions.get(claims["sid"])
    now = datetime.now(timezone.utc)
    if row is None or str(row[0]).replace("-", "") != claims["user_id"].replace("-", "") or str(row[1]).replace("-", "") != claims["tid"].replace("-", ""):
        await websocket.close(code=4404)
        return
    if row[2] != "active" or _aware(row[3]) <= now or _aware(row[4]) <= now:
        await websocket.close(code=4409)
        return
    await websocket.send_text(json.dumps({"type": "session.ready", "session_id": claims["sid"]}))
    try:
        while True:
            await websocket.receive_text()
    except Exception:  # noqa: BLE001 - disconnect
        return


app = Starlette(routes=[WebSocketRoute("/agent", agent)])
