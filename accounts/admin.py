"""Admin for users, tenants and memberships. The admin is a caller like any other: every
change with consequences for sessions (deactivating or activating a user, a new password,
a membership added, changed or removed, a tenant suspended or activated) goes through
`accounts.services`, from actions, forms and inlines alike, so sessions end, snapshots are
dropped, sockets close and the audit trail names the admin. Destructive actions need their
own permission, never just "view"."""

from __future__ import annotations

import contextvars
from typing import Any

from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import AdminPasswordChangeForm, BaseUserCreationForm, UserChangeForm
from django.core.cache import cache
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters
from rest_framework_simplejwt.token_blacklist.admin import BlacklistedTokenAdmin, OutstandingTokenAdmin
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

from accounts.models import Membership, Tenant, TenantStatus, User
from accounts.services import (
    membership_add,
    membership_remove,
    tenant_activate,
    tenant_create,
    tenant_suspend,
    user_activate,
    user_create,
    user_deactivate,
    user_password_set,
)
from core.admin import ReadOnlyAdmin, admin_caller, adopt_saved, email_column
from core.audit import audit_record
from core.caller import Caller
from core.conf import runtime_settings
from core.drf import client_address
from core.exceptions import DEPENDENCY_ERRORS, RateLimited
from core.http import error_response
from core.models import AuditEvent

# The admin caller of the request being served, for forms Django builds without the
# request (the password form). A context variable: each request has its own.
_acting: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("admin_caller", default=None)


class UserCreationAdminForm(BaseUserCreationForm):
    class Meta:
        model = User
        fields = ("email", "name")


class UserChangeAdminForm(UserChangeForm):
    class Meta:
        model = User
        fields = "__all__"


class SessionEndingPasswordForm(AdminPasswordChangeForm):
    """An admin's new password goes through `user_password_set`, which ends the user's
    sessions: a token stolen with the old password must not survive a reset. "Password-based
    authentication: disabled" is a change too (an unusable password, not an empty one)."""

    def save(self, commit: bool = True) -> User:
        caller = _acting.get()
        if caller is None:  # pragma: no cover - only built inside UserAdmin.user_change_password
            raise RuntimeError("SessionEndingPasswordForm is used outside the admin's password view.")
        usable = self.cleaned_data.get("set_usable_password", True)
        password = self.cleaned_data["password1"] if usable else None
        self.ended = user_password_set(user=self.user, password=password, caller=caller)
        return self.user


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]
    fields = ["user", "tenant", "role", "is_primary", "created_at"]
    readonly_fields = ["created_at"]


class _MembershipFormsetMixin:
    """Memberships added, changed or removed in an inline go through the services."""

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        if formset.model is not Membership:
            return super().save_formset(request, form, formset, change)  # type: ignore[misc]
        caller = admin_caller(request)
        formset.save(commit=False)  # fills deleted_objects, new_objects, changed_objects
        for membership in formset.deleted_objects:
            membership_remove(user=membership.user, tenant=membership.tenant, caller=caller)
        for membership in [*formset.new_objects, *(obj for obj, _ in formset.changed_objects)]:
            membership_add(
                user=membership.user, tenant=membership.tenant, role=membership.role,
                primary=membership.is_primary, caller=caller,
            )


@admin.register(User)
class UserAdmin(_MembershipFormsetMixin, DjangoUserAdmin):
    form = UserChangeAdminForm
    add_form = UserCreationAdminForm
    change_password_form = SessionEndingPasswordForm
    ordering = ["email"]
    list_display = [email_column("email", "email"), "name", "is_active", "is_staff", "date_joined"]
    list_filter = ["is_active", "is_staff"]
    search_fields = ["email", "name"]
    readonly_fields = ["date_joined", "last_login"]
    inlines = [MembershipInline]
    actions = ["deactivate_users"]
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Profile", {"fields": ("name",)}),
        ("Permissions", {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")}),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "name", "password1", "password2")}),)

    def has_deactivate_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("accounts.deactivate_user")

    @admin.action(
        description="Deactivate selected users (ends their sessions, closes sockets with 4401)",
        permissions=["deactivate"],
    )
    def deactivate_users(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        ended = sum(user_deactivate(user=user, caller=admin_caller(request)) for user in queryset)
        self.message_user(request, f"Deactivated {queryset.count()} users; ended {ended} sessions.", messages.SUCCESS)

    def save_model(self, request: HttpRequest, obj: User, form: Any, change: bool) -> None:
        # A new user is the operator's `user_create` (audited). On a change, "active"
        # unticked or ticked is a deactivation or an activation: the other fields are
        # saved as they are, the flag through its service.
        if not change:
            data = form.cleaned_data
            user = user_create(email=data["email"], password=data["password1"], name=data.get("name", ""),
                               caller=admin_caller(request))
            return adopt_saved(obj, user)
        if "is_active" not in form.changed_data:
            return super().save_model(request, obj, form, change)
        wanted, obj.is_active = obj.is_active, not obj.is_active
        super().save_model(request, obj, form, change)
        if wanted:
            user_activate(user=obj, caller=admin_caller(request))
        else:
            user_deactivate(user=obj, caller=admin_caller(request))

    def user_change_password(self, request: HttpRequest, id: str, form_url: str = "") -> HttpResponse:
        token = _acting.set(admin_caller(request))
        try:
            return super().user_change_password(request, id, form_url)
        finally:
            _acting.reset(token)


@admin.register(Tenant)
class TenantAdmin(_MembershipFormsetMixin, admin.ModelAdmin):
    list_display = ["name", "slug", "status", "created_at"]
    list_filter = ["status"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    readonly_fields = ["created_at"]  # the service stamps it
    inlines = [MembershipInline]
    actions = ["suspend_tenants", "activate_tenants"]

    def has_suspend_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("accounts.suspend_tenant")

    def get_readonly_fields(self, request: HttpRequest, obj: Tenant | None = None) -> Any:
        fields = list(super().get_readonly_fields(request, obj))
        return fields if obj is None or self.has_suspend_permission(request) else [*fields, "status"]

    @admin.action(description="Suspend selected tenants (ends their sessions)", permissions=["suspend"])
    def suspend_tenants(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        ended = sum(tenant_suspend(tenant=tenant, caller=admin_caller(request)) for tenant in queryset)
        self.message_user(request, f"Suspended {queryset.count()} tenants; ended {ended} sessions.", messages.SUCCESS)

    @admin.action(description="Activate selected tenants", permissions=["suspend"])
    def activate_tenants(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        activated = sum(tenant_activate(tenant=tenant, caller=admin_caller(request)) for tenant in queryset)
        self.message_user(request, f"Activated {activated} tenants.", messages.SUCCESS)

    def save_model(self, request: HttpRequest, obj: Tenant, form: Any, change: bool) -> None:
        # A new tenant is `tenant_create`'s (audited). A status changed in the form is a
        # suspension or an activation, through its service (so a suspension ends the
        # tenant's sessions and an activation revives no token).
        if not change:
            tenant = tenant_create(name=obj.name, slug=obj.slug, status=obj.status, caller=admin_caller(request))
            return adopt_saved(obj, tenant)
        if "status" not in form.changed_data:
            return super().save_model(request, obj, form, change)
        wanted = obj.status
        obj.status = Tenant.objects.values_list("status", flat=True).get(pk=obj.pk)
        super().save_model(request, obj, form, change)
        if wanted == TenantStatus.SUSPENDED:
            tenant_suspend(tenant=obj, caller=admin_caller(request))
        else:
            tenant_activate(tenant=obj, caller=admin_caller(request))


# simplejwt's token ledger is a security record the runtime writes itself: blacklisting
# a token by hand would later end its session as "refresh token reused".
for _model, _base in ((OutstandingToken, OutstandingTokenAdmin), (BlacklistedToken, BlacklistedTokenAdmin)):
    admin.site.unregister(_model)
    admin.site.register(_model, type(f"ReadOnly{_base.__name__}", (ReadOnlyAdmin, _base), {"actions": None}))


# --- The admin's login page: throttled and audited like the API's ---------------------
def _admin_login_key(address: str | None) -> str:
    window = int(timezone.now().timestamp() // 60)
    return f"admin-login-failures:{address or '-'}:{window}"


def _admin_login_failures(address: str | None) -> int:
    try:
        return int(cache.get(_admin_login_key(address)) or 0)
    except DEPENDENCY_ERRORS:  # the cache (Redis) is down: the password check still guards
        return 0


def _admin_login_failed(address: str | None) -> None:
    key = _admin_login_key(address)
    try:
        if not cache.add(key, 1, timeout=120):
            cache.incr(key)
    except DEPENDENCY_ERRORS:
        pass


@sensitive_post_parameters()
@csrf_protect
def admin_login(request: HttpRequest, extra_context: Any = None) -> HttpResponse:
    """Django's admin login, with failed attempts counted per client address (a fixed
    one-minute window in the shared cache: Django's admin has no throttle of its own and
    DRF's throttles need a DRF view) and every attempt in the audit trail."""
    address = client_address(request)
    limit = runtime_settings.ADMIN_LOGIN_FAILURES_PER_MINUTE
    if request.method == "POST" and _admin_login_failures(address) >= limit:
        return error_response(RateLimited(
            "Too many failed logins from this address. Retry later.",
            retry_after=60 - int(timezone.now().timestamp()) % 60,  # the end of the one-minute window
        ))
    response = admin.site.login(request, extra_context)
    if request.method == "POST":
        email = str(request.POST.get("username", ""))[:254]
        if response.status_code == 302 and request.user.is_authenticated:
            audit_record(kind=AuditEvent.Kind.LOGIN_SUCCEEDED, caller=admin_caller(request), user_id=request.user.pk,
                         data={"via": "admin"})
        else:
            _admin_login_failed(address)
            audit_record(kind=AuditEvent.Kind.LOGIN_FAILED, caller=Caller(client_address=address),
                         data={"via": "admin", "email": email})
    return response
