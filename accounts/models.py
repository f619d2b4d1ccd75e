"""Who you are: users (log in by email), tenants, and memberships with roles."""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib.auth import password_validation
from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.db import models, router, transaction
from django.db.models import Q
from django.utils import timezone

from core.caller import Caller


def normalize_email(email: str) -> str:
    """Emails are compared case-insensitively: the whole address is stored lowercased."""
    return (email or "").strip().lower()


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def create_user(self, email: str, password: str | None = None, **extra: Any) -> "User":
        if not email:
            raise ValueError("An email is required.")
        user = self.model(email=normalize_email(email), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_superuser(self, email: str, password: str | None = None, **extra: Any) -> "User":
        extra.setdefault("is_staff", True)
        extra.setdefault("is_superuser", True)
        return self.create_user(email, password, **extra)

    def get_by_natural_key(self, username: str | None) -> "User":
        return self.get(email=normalize_email(username or ""))


class User(AbstractBaseUser, PermissionsMixin):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    email = models.EmailField(unique=True, max_length=254)
    name = models.CharField(max_length=150, blank=True)
    is_active = models.BooleanField(default=True)
    is_staff = models.BooleanField(default=False)
    date_joined = models.DateTimeField(default=timezone.now)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    class Meta:
        ordering = ["email"]
        permissions = [("deactivate_user", "Can deactivate users (ends their sessions)")]

    def __str__(self) -> str:
        return self.email

    def clean(self) -> None:
        super().clean()
        self.email = normalize_email(self.email)

    # --- A new password ends the user's sessions, whichever path set it ------------------
    # `accounts.services.user_password_set` is the path of the project's own callers (the
    # admin's password form, `users set-password`, `changepassword`), each naming itself in
    # the audit row. Django's own paths (the admin's "change my password" page, its forms,
    # a shell) call set_password() and save(); `save` sends them to the same consequences,
    # as the system, in the same transaction as the password. Not a signal: the rule sits
    # on the one method every path crosses.
    _password_unusable_pending = False

    def set_password(self, raw_password: str | None) -> None:
        super().set_password(raw_password)
        # Django marks a change by keeping the raw password, which None is not.
        self._password_unusable_pending = raw_password is None

    def set_unusable_password(self) -> None:
        super().set_unusable_password()
        self._password_unusable_pending = True

    def password_change_pending(self, update_fields: Any = None) -> bool:
        """Whether saving now stores a new password of an existing user. Django's hash
        upgrade at login calls set_password and clears the mark: no change."""
        if self._state.adding or (update_fields is not None and "password" not in update_fields):
            return False
        return self._password is not None or self._password_unusable_pending

    def password_change_saved(self) -> None:
        """What Django's save does once a new password is stored (validators' hook, mark
        cleared), for `user_password_set`, which stores it with an update."""
        if self._password is not None:
            password_validation.password_changed(self._password, self)
        self._password, self._password_unusable_pending = None, False

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self.password_change_pending(kwargs.get("update_fields")):
            super().save(*args, **kwargs)
            self._password_unusable_pending = False
            return
        from accounts.services import user_password_changed  # services import this module

        with transaction.atomic(using=kwargs.get("using") or router.db_for_write(type(self), instance=self)):
            super().save(*args, **kwargs)
            self.password_change_saved()
            user_password_changed(user=self, caller=Caller.system())


class TenantStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    SUSPENDED = "suspended", "Suspended"


class Tenant(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=80, unique=True)
    status = models.CharField(max_length=16, choices=TenantStatus.choices, default=TenantStatus.ACTIVE)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        permissions = [("suspend_tenant", "Can suspend and activate tenants (ends their sessions)")]

    def __str__(self) -> str:
        return f"{self.name} ({self.slug})"

    @property
    def is_active(self) -> bool:
        return self.status == TenantStatus.ACTIVE


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    MEMBER = "member", "Member"
    VIEWER = "viewer", "Viewer"


class Permission(models.TextChoices):
    READ = "read", "Read"
    WRITE = "write", "Write"
    ADMIN = "admin", "Admin"
    DELETE = "delete", "Delete"


ROLE_PERMISSIONS: dict[str, tuple[str, ...]] = {
    Role.OWNER: (Permission.READ, Permission.WRITE, Permission.ADMIN, Permission.DELETE),
    Role.ADMIN: (Permission.READ, Permission.WRITE, Permission.ADMIN),
    Role.MEMBER: (Permission.READ, Permission.WRITE),
    Role.VIEWER: (Permission.READ,),
}


def role_permissions(role: str) -> tuple[str, ...]:
    """The permissions a role gives, as plain strings."""
    return tuple(str(p) for p in ROLE_PERMISSIONS.get(role, ()))


class Membership(models.Model):
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    is_primary = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "tenant"], name="membership_unique_user_tenant"),
            models.UniqueConstraint(
                fields=["user"], condition=Q(is_primary=True), name="membership_one_primary_per_user"
            ),
        ]
        ordering = ["-is_primary", "created_at"]

    def __str__(self) -> str:
        return f"{self.user} in {self.tenant.slug} as {self.role}"

    @property
    def permissions(self) -> tuple[str, ...]:
        return role_permissions(self.role)
