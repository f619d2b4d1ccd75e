"""Operator commands for users: `manage.py users list|create|set-password|deactivate`."""

from __future__ import annotations

import secrets
import sys
from typing import Any

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.core.validators import validate_email
from django.db.models import Count, Prefetch, Q

from accounts.management.lookups import tenant_by_slug, user_by_email
from accounts.models import Membership, User, normalize_email
from accounts.services import user_create, user_deactivate, user_password_set
from core.caller import Caller
from core.commands import common_options, table, when
from sessions_runtime.models import SessionStatus

NAME_MAX_LENGTH = User._meta.get_field("name").max_length


class Command(BaseCommand):
    help = "Users: list them, create one, set one's password or deactivate one (both end all their sessions)."

    def add_arguments(self, parser: Any) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="{list,create,set-password,deactivate}")

        listing = actions.add_parser(
            "list",
            help="List users.",
            description="List users with their tenants (slug:role, * marks the primary one) and active sessions.",
        )
        listing.add_argument("--tenant", metavar="SLUG", help="Only members of this tenant.")

        create = actions.add_parser(
            "create",
            help="Create a user (then give them a tenant with 'tenants add-member').",
            description="Create an active user with no tenant yet. The password is read from stdin with "
            "--password-stdin, or generated and printed once. Either way it must pass the password validators.",
        )
        create.add_argument("email", metavar="EMAIL", help="The user's email (their login).")
        create.add_argument("--name", default="", metavar="NAME", help="The user's display name.")
        create.add_argument(
            "--password-stdin", action="store_true",
            help="Read the password from the first line of stdin instead of generating one.",
        )
        create.add_argument("--staff", action="store_true", help="Let the user log in to the admin.")

        set_password = actions.add_parser(
            "set-password",
            help="Set a user's password and end all their sessions.",
            description="Set a user's password, read from stdin with --password-stdin or generated and printed "
            "once; it must pass the password validators. Every session of the user ends (sockets close with 4409), "
            "so a token taken with the old password dies with it.",
        )
        set_password.add_argument("email", metavar="EMAIL", help="The user's email.")
        set_password.add_argument(
            "--password-stdin", action="store_true",
            help="Read the password from the first line of stdin instead of generating one.",
        )

        deactivate = actions.add_parser(
            "deactivate",
            help="Deactivate a user and end all their sessions.",
            description="Deactivate a user: they can no longer log in, their tokens stop working, and every "
            "session of theirs ends (sockets close with 4401).",
        )
        deactivate.add_argument("email", metavar="EMAIL", help="The user's email.")
        common_options(parser, actions)

    def handle(self, *args: Any, **options: Any) -> None:
        handlers = {"list": self._list, "create": self._create, "set-password": self._set_password,
                    "deactivate": self._deactivate}
        handlers[options["action"]](options)

    def _list(self, options: dict[str, Any]) -> None:
        users = User.objects.all()
        if options["tenant"]:
            users = users.filter(memberships__tenant=tenant_by_slug(options["tenant"]))
        users = (
            users.annotate(
                active_sessions=Count("runtime_sessions", filter=Q(runtime_sessions__status=SessionStatus.ACTIVE))
            )
            .prefetch_related(
                Prefetch("memberships", queryset=Membership.objects.select_related("tenant").order_by("tenant__slug"))
            )
            .order_by("email")
        )
        rows = [
            [
                u.email,
                u.name,
                "yes" if u.is_active else "no",
                "yes" if u.is_staff else "no",
                ", ".join(f"{'*' if m.is_primary else ''}{m.tenant.slug}:{m.role}" for m in u.memberships.all()),
                u.active_sessions,
                when(u.date_joined),
            ]
            for u in users
        ]
        if not rows:
            self.stdout.write("No users.")
            return
        self.stdout.write(table(["email", "name", "active", "staff", "tenants", "active sessions", "joined"], rows))

    def _create(self, options: dict[str, Any]) -> None:
        email, name = normalize_email(options["email"]), (options["name"] or "").strip()
        try:
            validate_email(email)
        except ValidationError:
            raise CommandError(f"'{options['email']}' is not an email address.") from None
        if len(name) > NAME_MAX_LENGTH:
            raise CommandError(f"--name is limited to {NAME_MAX_LENGTH} characters.")
        if User.objects.filter(email=email).exists():
            raise CommandError(f"A user with email '{email}' already exists.")
        password, generated = _password(options, User(email=email, name=name))
        user = user_create(email=email, password=password, name=name, is_staff=options["staff"], caller=Caller.command())
        staff = " (staff)" if user.is_staff else ""
        if options["verbosity"] >= 1:
            self.stdout.write(f"Created user {user.email}{staff}, id {user.pk}; no tenant yet (use 'tenants add-member').")
        if generated:  # printed whatever the verbosity: it is shown nowhere else
            self.stdout.write(f"Password (shown once): {password}")

    def _set_password(self, options: dict[str, Any]) -> None:
        user = user_by_email(options["email"])
        password, generated = _password(options, user)
        ended = user_password_set(user=user, password=password, caller=Caller.command())
        self.stdout.write(f"Password of {user.email} set; ended {ended} session(s) (their sockets close with 4409).")
        if generated:
            self.stdout.write(f"Password (shown once): {password}")

    def _deactivate(self, options: dict[str, Any]) -> None:
        user = user_by_email(options["email"])
        already = not user.is_active
        ended = user_deactivate(user=user, caller=Caller.command())
        state = "was already inactive" if already else "deactivated"
        self.stdout.write(f"User {user.email} {state}; ended {ended} session(s) (their sockets close with 4401).")


def _password(options: dict[str, Any], user: User) -> tuple[str, bool]:
    """The password of `create` and `set-password`, from stdin or generated, checked by the
    validators; and whether it was generated (then it is printed once)."""
    generated = not options["password_stdin"]
    # Never a --password option: it would sit in shell history and in `ps` output.
    password = secrets.token_urlsafe(18) if generated else sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise CommandError("--password-stdin: no password on stdin.")
    try:
        validate_password(password, user=user)
    except ValidationError as error:
        raise CommandError("Password rejected: " + " ".join(error.messages)) from None
    return password, generated
