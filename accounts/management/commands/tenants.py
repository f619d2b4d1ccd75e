"""Operator commands for tenants: `manage.py tenants create|list|add-member|remove-member|suspend`.

Every change goes through `accounts.services`; ending sessions there closes their sockets.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Count, Q
from django.utils.text import slugify

from accounts.management.lookups import tenant_by_slug, user_by_email
from accounts.models import Membership, Role, Tenant, TenantStatus
from accounts.services import membership_add, membership_remove, tenant_create, tenant_suspend
from core.caller import Caller
from core.commands import table, when
from sessions_runtime.models import SessionStatus

MAX_SLUG_LENGTH = 60  # tenant_create keeps at most this much of a slug
MAX_NAME_LENGTH = Tenant._meta.get_field("name").max_length



class Command(BaseCommand):
    help = "Tenants and their members: create, list, add-member, remove-member, suspend."

    def add_arguments(self, parser: Any) -> None:
        actions = parser.add_subparsers(
            dest="action", required=True, metavar="{create,list,add-member,remove-member,suspend}"
        )

        create = actions.add_parser("create", help="Create a tenant.", description="Create an active tenant.")
        create.add_argument(
            "slug", metavar="SLUG",
            help=f"Lowercase letters, digits, '-' and '_' (at most {MAX_SLUG_LENGTH}); must be unused.",
        )
        create.add_argument("--name", required=True, metavar="NAME", help="The tenant's display name.")

        actions.add_parser(
            "list", help="List tenants.", description="List tenants with their members and active sessions."
        )

        add = actions.add_parser(
            "add-member",
            help="Add a user to a tenant, or change their role there.",
            description="Add an existing user to a tenant, or change the role of a member. A user's first "
            "membership becomes their primary one; --primary makes this one primary instead.",
        )
        add.add_argument("slug", metavar="SLUG", help="The tenant's slug.")
        add.add_argument("email", metavar="EMAIL", help="The user's email.")
        add.add_argument("--role", required=True, choices=Role.values, help="The member's role.")
        add.add_argument("--primary", action="store_true", help="Make this the user's primary tenant.")

        remove = actions.add_parser(
            "remove-member",
            help="Remove a user from a tenant and end their sessions in it.",
            description="Remove a user from a tenant and end their sessions in it (sockets close with 4409).",
        )
        remove.add_argument("slug", metavar="SLUG", help="The tenant's slug.")
        remove.add_argument("email", metavar="EMAIL", help="The user's email.")

        suspend = actions.add_parser(
            "suspend",
            help="Suspend a tenant and end every session in it.",
            description="Suspend a tenant: nobody can log in to it any more, and every session in it ends "
            "(sockets close with 4409).",
        )
        suspend.add_argument("slug", metavar="SLUG", help="The tenant's slug.")

    def handle(self, *args: Any, **options: Any) -> None:
        handlers = {
            "create": self._create,
            "list": self._list,
            "add-member": self._add_member,
            "remove-member": self._remove_member,
            "suspend": self._suspend,
        }
        handlers[options["action"]](options)

    def _create(self, options: dict[str, Any]) -> None:
        slug, name = options["slug"], (options["name"] or "").strip()
        if not slug or slugify(slug) != slug or len(slug) > MAX_SLUG_LENGTH:
            raise CommandError(
                f"'{slug}' is not a valid slug: use lowercase letters, digits, '-' and '_' "
                f"(at most {MAX_SLUG_LENGTH} characters)."
            )
        if not name:
            raise CommandError("--name must not be empty.")
        if len(name) > MAX_NAME_LENGTH:
            raise CommandError(f"--name is limited to {MAX_NAME_LENGTH} characters.")
        if Tenant.objects.filter(slug=slug).exists():
            raise CommandError(f"A tenant with slug '{slug}' already exists.")
        tenant = tenant_create(name=name, slug=slug, caller=Caller.command())
        self.stdout.write(f"Created tenant '{tenant.slug}' ({tenant.name}), id {tenant.pk}.")

    def _list(self, options: dict[str, Any]) -> None:
        tenants = Tenant.objects.annotate(
            members=Count("memberships", distinct=True),
            active_sessions=Count(
                "runtime_sessions", filter=Q(runtime_sessions__status=SessionStatus.ACTIVE), distinct=True
            ),
        ).order_by("slug")
        if not tenants:
            self.stdout.write("No tenants.")
            return
        self.stdout.write(
            table(
                ["slug", "name", "status", "members", "active sessions", "created", "id"],
                ([t.slug, t.name, t.status, t.members, t.active_sessions, when(t.created_at), t.pk] for t in tenants),
            )
        )

    def _add_member(self, options: dict[str, Any]) -> None:
        role = options["role"]
        if role not in Role.values:
            raise CommandError(f"Unknown role '{role}'; use one of {', '.join(Role.values)}.")
        tenant, user = tenant_by_slug(options["slug"]), user_by_email(options["email"])
        before = Membership.objects.filter(user=user, tenant=tenant).first()
        membership = membership_add(
            user=user, tenant=tenant, role=role, primary=True if options["primary"] else None, caller=Caller.command()
        )
        primary = " (primary)" if membership.is_primary else ""
        if before is None:
            self.stdout.write(f"Added {user.email} to {tenant.slug} as {membership.role}{primary}.")
        else:
            self.stdout.write(
                f"Updated {user.email} in {tenant.slug}: role {before.role} -> {membership.role}{primary}."
            )
        if tenant.status != TenantStatus.ACTIVE:
            self.stdout.write(f"Note: tenant {tenant.slug} is {tenant.status}; nobody can log in to it.")

    def _remove_member(self, options: dict[str, Any]) -> None:
        tenant, user = tenant_by_slug(options["slug"]), user_by_email(options["email"])
        if not Membership.objects.filter(user=user, tenant=tenant).exists():
            raise CommandError(f"{user.email} is not a member of {tenant.slug}.")
        ended = membership_remove(user=user, tenant=tenant, caller=Caller.command())
        self.stdout.write(f"Removed {user.email} from {tenant.slug}; ended {ended} session(s).")

    def _suspend(self, options: dict[str, Any]) -> None:
        tenant = tenant_by_slug(options["slug"])
        already = tenant.status == TenantStatus.SUSPENDED
        ended = tenant_suspend(tenant=tenant, caller=Caller.command())
        state = "was already suspended" if already else "suspended"
        self.stdout.write(f"Tenant {tenant.slug} {state}; ended {ended} session(s).")
