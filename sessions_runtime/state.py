"""The state surface: versioned JSON documents scoped by tenant and session.

One interface (`StateBackend`), three backends chosen by the `STATE_BACKEND` setting:
`database` (durable, the default, on SQLite or PostgreSQL), `redis` (for deployments that
keep hot state there) and `memory` (one process; tests). Every key is built by
`state_key`, from the tenant and the session, so one tenant's keys can never name
another's.
"""

from __future__ import annotations

import json
import threading
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from core.conf import runtime_settings
from core.exceptions import VersionConflict

SESSION_NAMESPACE = "session"
CONVERSATION_NAMESPACE = "conversation"


@dataclass(frozen=True, slots=True)
class StateKey:
    tenant_id: uuid.UUID
    session_id: uuid.UUID
    namespace: str = SESSION_NAMESPACE

    def __str__(self) -> str:
        return f"{self.namespace}:{self.tenant_id}:{self.session_id}"


def state_size(data: Any) -> int:
    """A state document's size as STATE_MAX_BYTES counts it: compact JSON, UTF-8."""
    return len(json.dumps(data, separators=(",", ":")).encode("utf-8"))


def state_key(*, tenant_id: uuid.UUID, session_id: uuid.UUID, namespace: str = SESSION_NAMESPACE) -> StateKey:
    return StateKey(tenant_id=uuid.UUID(str(tenant_id)), session_id=uuid.UUID(str(session_id)), namespace=namespace)


@dataclass(frozen=True, slots=True)
class StateDocument:
    version: int
    data: dict[str, Any] = field(default_factory=dict)
    updated_at: datetime | None = None


class StateBackend(ABC):
    """Compare-and-set storage of one JSON object per key.

    `read` of a key never written answers version 0 and `{}`. `write` succeeds only when
    `expected_version` is the current version, and returns the document at version + 1.
    """

    @abstractmethod
    def read(self, key: StateKey) -> StateDocument: ...

    @abstractmethod
    def write(self, key: StateKey, data: dict[str, Any], *, expected_version: int) -> StateDocument: ...

    @abstractmethod
    def delete(self, key: StateKey) -> None: ...


class DatabaseStateBackend(StateBackend):
    def read(self, key: StateKey) -> StateDocument:
        from sessions_runtime.models import SessionState

        row = SessionState.objects.filter(key=str(key)).values("version", "data", "updated_at").first()
        return StateDocument(**row) if row else StateDocument(version=0)

    def write(self, key: StateKey, data: dict[str, Any], *, expected_version: int) -> StateDocument:
        from sessions_runtime.models import SessionState

        now = timezone.now()
        if expected_version == 0:
            try:
                with transaction.atomic():
                    SessionState.objects.create(
                        key=str(key), tenant_id=key.tenant_id, session_id=key.session_id,
                        version=1, data=data, updated_at=now,
                    )
            except IntegrityError:
                raise VersionConflict() from None
            return StateDocument(version=1, data=data, updated_at=now)
        updated = SessionState.objects.filter(key=str(key), version=expected_version).update(
            version=expected_version + 1, data=data, updated_at=now
        )
        if not updated:
            raise VersionConflict()
        return StateDocument(version=expected_version + 1, data=data, updated_at=now)

    def delete(self, key: StateKey) -> None:
        from sessions_runtime.models import SessionState

        SessionState.objects.filter(key=str(key)).delete()


def _copy(document: StateDocument) -> StateDocument:
    return StateDocument(version=document.version, data=json.loads(json.dumps(document.data)), updated_at=document.updated_at)


class MemoryStateBackend(StateBackend):
    """One process only: for tests and single-process experiments. Like the other
    backends it hands out copies, so a caller changing what it read changes nothing stored."""

    def __init__(self) -> None:
        self._documents: dict[str, StateDocument] = {}
        self._lock = threading.Lock()

    def read(self, key: StateKey) -> StateDocument:
        with self._lock:
            return _copy(self._documents.get(str(key), StateDocument(version=0)))

    def write(self, key: StateKey, data: dict[str, Any], *, expected_version: int) -> StateDocument:
        with self._lock:
            current = self._documents.get(str(key), StateDocument(version=0))
            if current.version != expected_version:
                raise VersionConflict()
            document = _copy(StateDocument(version=expected_version + 1, data=data, updated_at=timezone.now()))
            self._documents[str(key)] = document
            return _copy(document)

    def delete(self, key: StateKey) -> None:
        with self._lock:
            self._documents.pop(str(key), None)


# Compare-and-set in one round trip: the version check and the write cannot interleave
# with another writer's.
_REDIS_CAS = """
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if current ~= tonumber(ARGV[1]) then return -1 end
local version = current + 1
redis.call('HSET', KEYS[1], 'version', version, 'data', ARGV[2], 'updated_at', ARGV[3])
if tonumber(ARGV[4]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[4]) end
return version
"""


class RedisStateBackend(StateBackend):
    """State in Redis hashes under `<prefix>:state:<key>`; expires with the session's
    absolute lifetime unless written again."""

    def __init__(self, url: str | None = None, prefix: str | None = None) -> None:
        """Through the settings' Redis (directly or through Sentinel), or straight to `url`."""
        from django.conf import settings

        from core.redis_options import RedisTarget

        target = (RedisTarget(url=url, tls_ca_file=getattr(settings, "REDIS_TLS_CA_FILE", None)) if url
                  else RedisTarget.from_settings(settings))
        self._client = target.client()
        self._prefix = prefix or getattr(settings, "REDIS_PREFIX", "symphainy")
        self._cas = self._client.register_script(_REDIS_CAS)

    def _name(self, key: StateKey) -> str:
        return f"{self._prefix}:state:{key}"

    def read(self, key: StateKey) -> StateDocument:
        raw = self._client.hgetall(self._name(key))
        if not raw:
            return StateDocument(version=0)
        return StateDocument(
            version=int(raw[b"version"]),
            data=json.loads(raw[b"data"]),
            updated_at=datetime.fromisoformat(raw[b"updated_at"].decode()),
        )

    def write(self, key: StateKey, data: dict[str, Any], *, expected_version: int) -> StateDocument:
        now = timezone.now()
        ttl = int(runtime_settings.SESSION_ABSOLUTE_TTL.total_seconds())
        version = self._cas(
            keys=[self._name(key)],
            args=[expected_version, json.dumps(data, separators=(",", ":")), now.isoformat(), ttl],
        )
        if int(version) < 0:
            raise VersionConflict()
        return StateDocument(version=int(version), data=data, updated_at=now)

    def delete(self, key: StateKey) -> None:
        self._client.delete(self._name(key))


_BACKENDS = {
    "database": DatabaseStateBackend,
    "memory": MemoryStateBackend,
    "redis": RedisStateBackend,
}
_instances: dict[str, StateBackend] = {}
_instances_lock = threading.Lock()


def state_backend() -> StateBackend:
    """The configured backend (one instance per setting value, per process)."""
    name = runtime_settings.STATE_BACKEND
    with _instances_lock:
        if name not in _instances:
            factory = _BACKENDS.get(name) or import_string(name)
            _instances[name] = factory()
        return _instances[name]
