"""Lookups shared by the accounts commands, failing with a one-line CommandError."""

from __future__ import annotations

from accounts.models import Tenant, User, normalize_email
from core.commands import lookup


def user_by_email(email: str) -> User:
    return lookup(User.objects.filter(email=normalize_email(email)), f"No user with email '{email}'.")


def tenant_by_slug(slug: str) -> Tenant:
    return lookup(Tenant.objects.filter(slug=slug.strip().lower()), f"No tenant with slug '{slug}'.")
