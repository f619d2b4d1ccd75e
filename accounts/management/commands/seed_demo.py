"""Create the demo tenant and user that the README's run command uses.

An existing user keeps its password and its active flag: the seed never resets a
password an operator changed, nor re-activates a user an operator deactivated."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction

from accounts.models import Role, Tenant, User, normalize_email
from accounts.services import membership_add, tenant_create, user_create
from core.caller import Caller
from core.conf import runtime_settings


class Command(BaseCommand):
    help = "Create the demo tenant and user (idempotent) and print how to log in."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--email", default=None, help="Demo user's email (default: DEMO_EMAIL).")
        parser.add_argument("--password", default=None, help="Demo user's password (default: DEMO_PASSWORD).")
        parser.add_argument("--base-url", default="http://127.0.0.1:8000", help="Where the service listens.")

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        email = normalize_email(options["email"] or runtime_settings.DEMO_EMAIL)
        password = options["password"] or runtime_settings.DEMO_PASSWORD
        tenant = Tenant.objects.filter(slug="demo").first() or tenant_create(
            name="Demo tenant", slug="demo", caller=Caller.command()
        )
        user = User.objects.filter(email=email).first()
        if user is not None:
            self.stdout.write(
                f"Demo user {email} exists already: left as it is (password and active flag unchanged)."
            )
            return
        user = user_create(email=email, password=password, name="Demo User", caller=Caller.command())
        membership_add(user=user, tenant=tenant, role=Role.OWNER, caller=Caller.command())
        base = options["base_url"].rstrip("/")
        self.stdout.write(
            f"Demo tenant '{tenant.slug}' ({tenant.pk}) and user ready.\n"
            f"  email:    {email}\n"
            f"  password: {password}\n"
            f"Log in:\n"
            f"  curl -s -X POST {base}/api/auth/login -H 'Content-Type: application/json' \\\n"
            f"       -d '{{\"email\": \"{email}\", \"password\": \"{password}\"}}'\n"
        )
