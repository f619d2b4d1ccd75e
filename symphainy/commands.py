"""Shared pieces of the operator commands (`sessions`, `tenants`, `users`, `runtime_sweep`):
lookups that fail with a one-line CommandError, a plain text table, and the confirm prompt.

Commands only read through these; every change goes through a service.
"""

from __future__ import annotations

import uuid
from argparse import ArgumentTypeError
from datetime import UTC, datetime
from typing import Any, Iterable, Sequence

from django.core.management.base import CommandError

from accounts.models import Tenant, User, normalize_email
from sessions_runtime.models import ActorType, RuntimeSession
from sessions_runtime.selectors import session_id_parse
from sessions_runtime.services import Actor


def command_actor() -> Actor:
    """The actor recorded in the audit trail for every change made by a command."""
    return Actor(type=ActorType.COMMAND)


def user_by_email(email: str) -> User:
    user = User.objects.filter(email=normalize_email(email)).first()
    if user is None:
        raise CommandError(f"No user with email '{email}'.")
    return user


def tenant_by_slug(slug: str) -> Tenant:
    tenant = Tenant.objects.filter(slug=slug.strip().lower()).first()
    if tenant is None:
        raise CommandError(f"No tenant with slug '{slug}'.")
    return tenant


def session_uuid(raw: str) -> uuid.UUID:
    parsed = session_id_parse(raw.strip())
    if parsed is None:
        raise CommandError(f"'{raw}' is not a session id (expected a UUID).")
    return parsed


def session_by_id(raw: str) -> RuntimeSession:
    session = RuntimeSession.objects.select_related("user", "tenant").filter(pk=session_uuid(raw)).first()
    if session is None:
        raise CommandError(f"No session with id {raw.strip()}.")
    return session


def positive_int(raw: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ArgumentTypeError(f"expected a whole number of at least 1, got '{raw}'")
    return value


def when(value: datetime | None) -> str:
    """A timestamp for a table cell: UTC, to the second; '-' for none."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Left-aligned columns two spaces apart, with a header line."""
    cells = [[str(c) for c in headers]] + [["-" if c in (None, "") else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def confirm(question: str, *, assume_yes: bool) -> bool:
    """Ask a yes/no question on the terminal (default no). With no terminal to answer it
    (stdin closed), fail rather than guess, so that a script without --yes does nothing."""
    if assume_yes:
        return True
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        raise CommandError("No answer on stdin; nothing was changed. Pass --yes to skip the question.") from None
    return answer.strip().lower() in ("y", "yes")
