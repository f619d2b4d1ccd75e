"""The read-only admin base, the id-or-email search, and the audit trail's admin."""

from __future__ import annotations

import uuid

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from core.models import AuditEvent


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records written by the runtime itself: visible, never edited by hand."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class IdOrEmailSearch:
    """Search by an exact id (`search_id_field`) or by the user's email. An empty search
    is no filter: a join on the user would hide the rows without one (failed logins,
    socket refusals, tenant changes)."""

    search_id_field = "pk"

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            return queryset.filter(**{self.search_id_field: uuid.UUID(term)}), False
        except ValueError:
            return queryset.filter(user__email__icontains=term), False


@admin.register(AuditEvent)
class AuditEventAdmin(IdOrEmailSearch, ReadOnlyAdmin):
    search_id_field = "session_id"
    list_display = ["at", "kind", "actor_type", "actor", "user", "tenant", "session_id", "client_address"]
    list_select_related = ["actor", "user", "tenant"]
    list_filter = ["kind", "actor_type"]
    search_fields = ["=session_id", "user__email"]
    date_hierarchy = "at"
    show_full_result_count = False
