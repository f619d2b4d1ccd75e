"""Shared pieces of the operator commands (`sessions`, `tenants`, `users`, `runtime_sweep`):
lookups that fail with a one-line CommandError, a plain text table, and the confirm prompt.

Commands only read through these; every change goes through a service.
"""

from __future__ import annotations

import argparse
import uuid
from argparse import ArgumentTypeError
from datetime import UTC, datetime
from typing import Any, Iterable, Sequence

from django.core.management.base import CommandError
from django.db.models import QuerySet

# Django's own options, which BaseCommand.create_parser puts on the top-level parser only.
COMMON_OPTIONS = ("verbosity", "settings", "pythonpath", "traceback", "no_color", "force_color", "skip_checks")


def common_options(parser: argparse.ArgumentParser, subcommands: argparse.Action) -> None:
    """Accept (and show in help) Django's common options after any subcommand too, so that
    `manage.py sessions expire -v 0` works as cron users write it. Copied from the command's
    own parser (same flags, help and choices); the default is SUPPRESS so that an option
    given before the subcommand is not reset by the subparser's default."""
    common = [a for a in parser._actions if a.dest in COMMON_OPTIONS]  # argparse has no public list
    for sub in subcommands.choices.values():
        group = sub.add_argument_group("common options")
        for action in common:
            kwargs: dict[str, Any] = {"dest": action.dest, "default": argparse.SUPPRESS, "help": action.help}
            if action.nargs == 0:
                kwargs["action"] = "store_true"
            else:
                kwargs.update(type=action.type, choices=action.choices, metavar=action.metavar)
            group.add_argument(*action.option_strings, **kwargs)


def lookup(queryset: QuerySet, missing: str) -> Any:
    """The first row of `queryset`, or a one-line CommandError saying what is missing."""
    found = queryset.first()
    if found is None:
        raise CommandError(missing)
    return found


def uuid_arg(raw: str, *, what: str = "session id") -> uuid.UUID:
    """A UUID from the command line, or a one-line CommandError."""
    try:
        return uuid.UUID(raw.strip())
    except ValueError:
        raise CommandError(f"'{raw}' is not a {what} (expected a UUID).") from None


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
