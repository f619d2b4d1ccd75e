"""Operator commands for users: `manage.py users list|deactivate`."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.db.models import Count, Prefetch, Q

from accounts.management.lookups import tenant_by_slug, user_by_email
from accounts.models import Membership, User
from accounts.services import user_deactivate
from core.caller import Caller
from core.commands import table, when
from sessions_runtime.models import SessionStatus


class Command(BaseCommand):
    help = "Users: list them, or deactivate one (which ends all their sessions)."

    def add_arguments(self, parser: Any) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="{list,deactivate}")

        listing = actions.add_parser(
            "list",
            help="List users.",
            description="List users with their tenants (slug:role, * marks the primary one) and active sessions.",
        )
        listing.add_argument("--tenant", metavar="SLUG", help="Only members of this tenant.")

        deactivate = actions.add_parser(
            "deactivate",
            help="Deactivate a user and end all their sessions.",
            description="Deactivate a user: they can no longer log in, their tokens stop working, and every "
            "session of theirs ends (sockets close with 4401).",
        )
        deactivate.add_argument("email", metavar="EMAIL", help="The user's email.")

    def handle(self, *args: Any, **options: Any) -> None:
        {"list": self._list, "deactivate": self._deactivate}[options["action"]](options)

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

    def _deactivate(self, options: dict[str, Any]) -> None:
        user = user_by_email(options["email"])
        already = not user.is_active
        ended = user_deactivate(user=user, caller=Caller.command())
        state = "was already inactive" if already else "deactivated"
        self.stdout.write(f"User {user.email} {state}; ended {ended} session(s) (their sockets close with 4401).")
