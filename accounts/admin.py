"""Admin for users, tenants and memberships. Changes with consequences for sessions
(deactivating a user, removing a member, suspending a tenant) go through the services,
so that the sessions end and their sockets close."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import BaseUserCreationForm, UserChangeForm
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts.models import Membership, Tenant, User
from accounts.services import membership_remove, tenant_suspend, user_deactivate
from core.caller import Caller


def _caller(request: HttpRequest) -> Caller:
    return Caller.admin(user_id=request.user.pk, client_address=request.META.get("REMOTE_ADDR"))


class UserCreationAdminForm(BaseUserCreationForm):
    class Meta:
        model = User
        fields = ("email", "name")


class UserChangeAdminForm(UserChangeForm):
    class Meta:
        model = User
        fields = "__all__"


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]
    fields = ["user", "tenant", "role", "is_primary", "created_at"]
    readonly_fields = ["created_at"]


class _MembershipFormsetMixin:
    """Removing a membership ends that user's sessions in the tenant (through the service)."""

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        if formset.model is not Membership:
            return super().save_formset(request, form, formset, change)  # type: ignore[misc]
        instances = formset.save(commit=False)
        for membership in formset.deleted_objects:
            membership_remove(user=membership.user, tenant=membership.tenant, caller=_caller(request))
        for membership in instances:
            membership.save()
        formset.save_m2m()


@admin.register(User)
class UserAdmin(_MembershipFormsetMixin, DjangoUserAdmin):
    form = UserChangeAdminForm
    add_form = UserCreationAdminForm
    ordering = ["email"]
    list_display = ["email", "name", "is_active", "is_staff", "date_joined"]
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

    @admin.action(description="Deactivate selected users (ends their sessions, closes sockets with 4401)")
    def deactivate_users(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        ended = sum(user_deactivate(user=user, caller=_caller(request)) for user in queryset)
        self.message_user(request, f"Deactivated {queryset.count()} users; ended {ended} sessions.", messages.SUCCESS)

    def save_model(self, request: HttpRequest, obj: User, form: Any, change: bool) -> None:
        # Unticking "active" here is a deactivation: it must end the sessions too.
        was_active = change and User.objects.filter(pk=obj.pk, is_active=True).exists()
        super().save_model(request, obj, form, change)
        if was_active and not obj.is_active:
            user_deactivate(user=obj, caller=_caller(request))


@admin.register(Tenant)
class TenantAdmin(_MembershipFormsetMixin, admin.ModelAdmin):
    list_display = ["name", "slug", "status", "created_at"]
    list_filter = ["status"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [MembershipInline]
    actions = ["suspend_tenants"]

    @admin.action(description="Suspend selected tenants (ends their sessions)")
    def suspend_tenants(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        ended = sum(tenant_suspend(tenant=tenant, caller=_caller(request)) for tenant in queryset)
        self.message_user(request, f"Suspended {queryset.count()} tenants; ended {ended} sessions.", messages.SUCCESS)
