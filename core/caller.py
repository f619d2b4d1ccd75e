"""Who is acting: the one caller type every service takes.

REST requests and sockets each produce one from the token check; the admin, management
commands and the system's own sweeps have constructors of their own. It holds ids, not
model instances, so a socket can keep one for its whole life at little cost.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace

from core.models import ActorType


@dataclass(frozen=True, slots=True)
class Caller:
    kind: str = ActorType.USER
    user_id: uuid.UUID | None = None
    tenant_id: uuid.UUID | None = None
    # The session the caller acts in: the token's own session (REST), or the session a
    # socket was opened on (`?session_id=`), which belongs to the same user and tenant.
    session_id: uuid.UUID | None = None
    role: str | None = None
    permissions: tuple[str, ...] = ()
    client_address: str | None = None

    def can(self, permission: str) -> bool:
        return str(permission) in self.permissions

    @property
    def roles(self) -> tuple[str, ...]:
        return (self.role,) if self.role else ()

    def at(self, client_address: str | None) -> "Caller":
        """The same caller, seen from `client_address`."""
        return replace(self, client_address=client_address or None)

    @classmethod
    def system(cls) -> "Caller":
        return cls(kind=ActorType.SYSTEM)

    @classmethod
    def command(cls) -> "Caller":
        return cls(kind=ActorType.COMMAND)

    @classmethod
    def admin(cls, *, user_id: uuid.UUID, client_address: str | None = None) -> "Caller":
        """A staff user acting through the Django admin (not within any tenant)."""
        return cls(kind=ActorType.ADMIN, user_id=user_id, client_address=client_address or None)
