"""Writes of the accounts app: registering, logging in and out, tenants and memberships.

Login creates the runtime session in the same transaction as the tokens, through the
one session service: no tokens ever exist without a session.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass

from django.contrib.auth import authenticate
from django.db import IntegrityError, transaction
from django.utils.text import slugify

from accounts.models import Membership, Role, Tenant, TenantStatus, User, normalize_email
from accounts.passwords import password_hashing_slot
from accounts.throttles import login_failure_record, login_failures_clear, login_lockout_check
from accounts.tokens import TokenPair, tokens_issue
from core.audit import audit_record
from core.caller import Caller
from core.events import access_changed_record
from core.exceptions import CloseCode, EmailTaken, InvalidCredentials, TenantAccessDenied
from core.metrics import LOGINS
from core.models import AuditEvent
from sessions_runtime.access import access_cache_forget
from sessions_runtime.models import EndReason, RuntimeSession, SessionStatus
from sessions_runtime.services import session_create, session_end, sessions_end
from sessions_runtime.session_intents import SessionIntentAction, session_intent_build


@dataclass(frozen=True, slots=True)
class LoginResult:
    user: User
    membership: Membership
    session: RuntimeSession
    tokens: TokenPair


@transaction.atomic
def tenant_create(
    *, name: str, slug: str | None = None, status: str = TenantStatus.ACTIVE, caller: Caller | None = None
) -> Tenant:
    """A tenant with a unique slug derived from its name unless one is given. A tenant
    created suspended (the admin's form offers it) has no sessions to end."""
    base = slugify(slug or name)[:60] or "tenant"
    candidate = base
    while Tenant.objects.filter(slug=candidate).exists():
        candidate = f"{base}-{secrets.token_hex(3)}"
    tenant = Tenant.objects.create(name=name, slug=candidate, status=status)
    data = {"slug": tenant.slug} if status == TenantStatus.ACTIVE else {"slug": tenant.slug, "status": status}
    audit_record(kind=AuditEvent.Kind.TENANT_CREATED, caller=caller or Caller.system(), tenant_id=tenant.pk, data=data)
    return tenant


@transaction.atomic
def membership_add(
    *, user: User, tenant: Tenant, role: str, primary: bool | None = None, caller: Caller | None = None
) -> Membership:
    """Add (or update) a membership. The first membership of a user becomes primary;
    without `primary`, an update keeps whether this one is primary."""
    if primary is None:
        primary = not user.memberships.filter(is_primary=True).exclude(tenant=tenant).exists()
    if primary:
        user.memberships.filter(is_primary=True).exclude(tenant=tenant).update(is_primary=False)
    before = Membership.objects.filter(user=user, tenant=tenant).values_list("role", "is_primary").first()
    membership, _ = Membership.objects.update_or_create(
        user=user, tenant=tenant, defaults={"role": role, "is_primary": primary}
    )
    if before != (role, primary):  # audited when something changed, not on a repeat
        audit_record(kind=AuditEvent.Kind.MEMBERSHIP_CHANGED, caller=caller or Caller.system(), user_id=user.pk,
                     tenant_id=tenant.pk, data={"role": role, "previous_role": before and before[0], "primary": primary})
    # Open sockets and cached session snapshots carry the role: a change applies to both
    # on every process, through the event log.
    if before is None or before[0] != role:
        active = list(
            RuntimeSession.objects.filter(user=user, tenant=tenant, status=SessionStatus.ACTIVE).values_list("pk", flat=True)
        )
        access_cache_forget(active)
        access_changed_record(active, role=role)
    return membership


def _login_session(*, user: User, membership: Membership, action: str, caller: Caller) -> LoginResult:
    intent = session_intent_build(user_id=user.pk, tenant_id=membership.tenant_id, role=membership.role, action=action)
    session = session_create(intent=intent, caller=caller)
    tokens = tokens_issue(session=session)
    return LoginResult(user=user, membership=membership, session=session, tokens=tokens)


@transaction.atomic
def user_register(
    *, email: str, password: str, name: str = "", tenant_name: str | None = None, client_address: str | None = None
) -> LoginResult:
    """Create a user, a tenant they own, and their first session; return the login."""
    email = normalize_email(email)
    if User.objects.filter(email=email).exists():
        raise EmailTaken()
    try:
        with password_hashing_slot(), transaction.atomic():
            user = User.objects.create_user(email=email, password=password, name=name)
    except IntegrityError:
        raise EmailTaken() from None
    caller = Caller(user_id=user.pk, client_address=client_address)
    tenant = tenant_create(name=tenant_name or name or email.split("@")[0], caller=caller)
    membership = membership_add(user=user, tenant=tenant, role=Role.OWNER, primary=True, caller=caller)
    audit_record(kind=AuditEvent.Kind.USER_REGISTERED, caller=caller, user_id=user.pk, tenant_id=tenant.pk)
    return _login_session(user=user, membership=membership, action=SessionIntentAction.REGISTER, caller=caller)


@transaction.atomic
def user_create(*, email: str, password: str, name: str = "", is_staff: bool = False, caller: Caller) -> User:
    """A user made by an operator, with no tenant yet (`tenants add-member` gives them one).
    The password is checked by the caller's edge, as registration's serializer does."""
    email = normalize_email(email)
    if User.objects.filter(email=email).exists():
        raise EmailTaken()
    try:
        with transaction.atomic():
            user = User.objects.create_user(email=email, password=password, name=name, is_staff=is_staff)
    except IntegrityError:
        raise EmailTaken() from None
    audit_record(kind=AuditEvent.Kind.USER_CREATED, caller=caller, user_id=user.pk, data={"staff": is_staff})
    return user


def _login_membership(user: User, tenant_id: uuid.UUID | None) -> Membership:
    memberships = Membership.objects.select_related("tenant").filter(user=user)
    if tenant_id is not None:
        memberships = memberships.filter(tenant_id=tenant_id)
    membership = memberships.order_by("-is_primary", "created_at").first()
    if membership is None:
        raise TenantAccessDenied()
    return membership


def auth_login(
    *, email: str, password: str, tenant_id: uuid.UUID | None = None, client_address: str | None = None
) -> LoginResult:
    """Check the password, pick the tenant, create the session and issue its tokens.

    Unknown user, wrong password, inactive user and a right password without a usable
    membership (none, another tenant's, a suspended tenant) are one `InvalidCredentials`:
    a different answer would tell a guesser the password was right. The audit row keeps
    the real reason. A failure leaves nothing else behind.
    """
    email = normalize_email(email)
    login_lockout_check(email=email, client_address=client_address)
    with password_hashing_slot():
        user = authenticate(request=None, email=email, password=password)
    failure = Caller(client_address=client_address)
    if user is None:
        audit_record(kind=AuditEvent.Kind.LOGIN_FAILED, caller=failure, data={"email": email[:254], "reason": "credentials"})
        LOGINS.labels(outcome="failed").inc()
        login_failure_record(email=email, client_address=client_address)
        raise InvalidCredentials()
    try:
        with transaction.atomic():
            membership = _login_membership(user, tenant_id)
            caller = Caller(user_id=user.pk, client_address=client_address)
            result = _login_session(user=user, membership=membership, action=SessionIntentAction.LOGIN, caller=caller)
            audit_record(
                kind=AuditEvent.Kind.LOGIN_SUCCEEDED,
                caller=caller,
                user_id=user.pk,
                tenant_id=membership.tenant_id,
                session_id=result.session.pk,
            )
        LOGINS.labels(outcome="succeeded").inc()
        login_failures_clear(email=email, client_address=client_address)
        return result
    except TenantAccessDenied as exc:
        audit_record(
            kind=AuditEvent.Kind.LOGIN_FAILED,
            caller=failure,
            user_id=user.pk,
            data={"email": email, "reason": (exc.details or {}).get("reason", "tenant_access")},
        )
        LOGINS.labels(outcome="failed").inc()
        login_failure_record(email=email, client_address=client_address)  # counted like a wrong password
        raise InvalidCredentials() from None


def auth_logout(*, caller: Caller) -> None:
    """End the caller's own session (its sockets close with 4409)."""
    session_end(session_id=caller.session_id, reason=EndReason.LOGOUT, caller=caller)


def auth_logout_all(*, caller: Caller) -> int:
    """End every active session of the caller, in every tenant."""
    return sessions_end(
        sessions=RuntimeSession.objects.filter(user_id=caller.user_id), reason=EndReason.LOGOUT_ALL, caller=caller
    )


@transaction.atomic
def user_deactivate(*, user: User, caller: Caller) -> int:
    """Deactivate a user and end all their sessions; their sockets close with 4401."""
    if user.is_active:
        User.objects.filter(pk=user.pk).update(is_active=False)
        user.is_active = False
        audit_record(kind=AuditEvent.Kind.USER_DEACTIVATED, caller=caller, user_id=user.pk)
    return sessions_end(
        sessions=RuntimeSession.objects.filter(user_id=user.pk),
        reason=EndReason.USER_DEACTIVATED,
        caller=caller,
        close_code=CloseCode.UNAUTHENTICATED,
    )


@transaction.atomic
def membership_remove(*, user: User, tenant: Tenant, caller: Caller) -> int:
    """Remove a user from a tenant and end their sessions in it."""
    removed, _ = Membership.objects.filter(user=user, tenant=tenant).delete()
    if removed:
        audit_record(kind=AuditEvent.Kind.MEMBERSHIP_REMOVED, caller=caller, user_id=user.pk, tenant_id=tenant.pk)
    return sessions_end(
        sessions=RuntimeSession.objects.filter(user_id=user.pk, tenant_id=tenant.pk),
        reason=EndReason.MEMBERSHIP_REMOVED,
        caller=caller,
    )


@transaction.atomic
def tenant_suspend(*, tenant: Tenant, caller: Caller) -> int:
    """Suspend a tenant and end every session in it."""
    if Tenant.objects.filter(pk=tenant.pk, status=TenantStatus.ACTIVE).update(status=TenantStatus.SUSPENDED):
        audit_record(kind=AuditEvent.Kind.TENANT_SUSPENDED, caller=caller, tenant_id=tenant.pk)
    tenant.status = TenantStatus.SUSPENDED
    return sessions_end(
        sessions=RuntimeSession.objects.filter(tenant_id=tenant.pk), reason=EndReason.TENANT_SUSPENDED, caller=caller
    )


@transaction.atomic
def tenant_activate(*, tenant: Tenant, caller: Caller) -> bool:
    """Let a suspended tenant's members log in again. Sessions ended by the suspension stay
    ended, so no token issued before it works again. Returns whether anything changed."""
    changed = bool(Tenant.objects.filter(pk=tenant.pk, status=TenantStatus.SUSPENDED).update(status=TenantStatus.ACTIVE))
    if changed:
        audit_record(kind=AuditEvent.Kind.TENANT_ACTIVATED, caller=caller, tenant_id=tenant.pk)
    tenant.status = TenantStatus.ACTIVE
    return changed


@transaction.atomic
def user_activate(*, user: User, caller: Caller) -> bool:
    """Let a deactivated user log in again (their old sessions stay ended)."""
    changed = bool(User.objects.filter(pk=user.pk, is_active=False).update(is_active=True))
    if changed:
        audit_record(kind=AuditEvent.Kind.USER_ACTIVATED, caller=caller, user_id=user.pk)
    user.is_active = True
    return changed


@transaction.atomic
def user_password_set(*, user: User, password: str | None, caller: Caller) -> int:
    """Set a new password (None: no password login at all) and end every session of the
    user, so that a token stolen with the old password dies with it (their sockets close
    with 4409). The path of every caller that can name itself; `User.save` sends Django's
    own paths to the same consequences. Returns how many sessions ended."""
    if password is None:
        user.set_unusable_password()
    else:
        user.set_password(password)
    User.objects.filter(pk=user.pk).update(password=user.password)
    user.password_change_saved()
    return user_password_changed(user=user, caller=caller)


@transaction.atomic
def user_password_changed(*, user: User, caller: Caller) -> int:
    """What a stored new password does, in its transaction: the audit row, and every
    session of the user ended (their sockets close once the tail reads the end from the
    event log). Called by `user_password_set` and by `User.save`, nothing else."""
    audit_record(kind=AuditEvent.Kind.PASSWORD_CHANGED, caller=caller, user_id=user.pk)
    return sessions_end(
        sessions=RuntimeSession.objects.filter(user_id=user.pk), reason=EndReason.PASSWORD_CHANGED, caller=caller
    )
