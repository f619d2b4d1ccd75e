"""Admin for runtime sessions and executions.

Sessions are inspected here and ended through the session service (with the acting admin
recorded); they are never added or edited by hand. List pages make no per-row queries:
related rows are joined and socket counts annotated.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from core.admin import IdOrEmailSearch, ReadOnlyAdmin
from core.caller import Caller
from realtime.models import Connection
from sessions_runtime.models import EndReason, Execution, RuntimeSession, SessionStatus
from sessions_runtime.services import sessions_end
from sessions_runtime.state_writes import session_state_read


def _pretty(value: Any) -> str:
    return format_html("<pre style='margin:0'>{}</pre>", json.dumps(value, indent=2, sort_keys=True, default=str))


class EffectiveStatusFilter(admin.SimpleListFilter):
    """By the status clients see (an active session past an expiry counts as expired)."""

    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return list(SessionStatus.choices)

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() in SessionStatus.values:
            return queryset.with_status(self.value())
        return queryset


class ConnectionInline(admin.TabularInline):
    model = Connection
    extra = 0
    can_delete = False
    fields = ["channel_name", "server_instance", "opened_at", "client_address", "user_agent"]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ExecutionInline(admin.TabularInline):
    model = Execution
    extra = 0
    can_delete = False
    fields = ["id", "intent_type", "status", "progress", "created_at", "finished_at"]
    readonly_fields = fields
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(RuntimeSession)
class RuntimeSessionAdmin(ReadOnlyAdmin):
    list_display = [
        "id", "user", "tenant", "status_shown", "created_at", "last_seen_at", "expires_at", "live_sockets", "end_reason",
    ]
    list_select_related = ["user", "tenant"]
    list_filter = [EffectiveStatusFilter, "tenant"]
    search_fields = ["user__email", "tenant__slug", "tenant__name"]
    ordering = ["-created_at"]
    show_full_result_count = False
    actions = ["end_sessions"]
    inlines = [ConnectionInline, ExecutionInline]
    fields = [
        "id", "user", "tenant", "status_shown", "created_at", "last_seen_at", "idle_expires_at", "expires_at",
        "ended_at", "end_reason", "ended_by_type", "ended_by", "metadata_shown", "intent_shown", "state_shown",
    ]
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).annotate(socket_count=Count("connections"))

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        try:
            return queryset.filter(pk=uuid.UUID(search_term.strip())), False
        except ValueError:
            return super().get_search_results(request, queryset, search_term)

    @admin.display(description="status")
    def status_shown(self, session: RuntimeSession) -> str:
        return session.effective_status()

    @admin.display(description="live sockets", ordering="socket_count")
    def live_sockets(self, session: RuntimeSession) -> int:
        return session.socket_count

    @admin.display(description="metadata")
    def metadata_shown(self, session: RuntimeSession) -> str:
        return _pretty(session.metadata)

    @admin.display(description="session intent")
    def intent_shown(self, session: RuntimeSession) -> str:
        return _pretty(session.intent)

    @admin.display(description="state")
    def state_shown(self, session: RuntimeSession) -> str:
        document = session_state_read(session=session)
        return _pretty({"version": document.version, "data": document.data})

    def has_end_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("sessions_runtime.end_runtimesession")

    @admin.action(description="End selected sessions", permissions=["end"])
    def end_sessions(self, request: HttpRequest, queryset: QuerySet[RuntimeSession]) -> None:
        caller = Caller.admin(user_id=request.user.pk, client_address=request.META.get("REMOTE_ADDR"))
        ended = sessions_end(
            sessions=RuntimeSession.objects.filter(pk__in=queryset.values("pk")), reason=EndReason.ADMIN, caller=caller
        )
        self.message_user(request, f"Ended {ended} sessions; their sockets are closing.", messages.SUCCESS)


@admin.register(Execution)
class ExecutionAdmin(IdOrEmailSearch, ReadOnlyAdmin):
    list_display = ["id", "intent_type", "status", "user", "tenant", "session_id", "created_at", "finished_at"]
    list_select_related = ["user", "tenant"]
    list_filter = ["status", "intent_type"]
    search_fields = ["=id", "user__email"]
    fields = [
        "id", "intent_type", "status", "session", "user", "tenant", "progress", "result_shown", "error_shown",
        "cancel_requested", "attempts", "worker", "created_at", "started_at", "finished_at", "heartbeat_at",
    ]
    readonly_fields = fields

    @admin.display(description="result")
    def result_shown(self, execution: Execution) -> str:
        return _pretty(execution.result)

    @admin.display(description="error")
    def error_shown(self, execution: Execution) -> str:
        return _pretty(execution.error)
