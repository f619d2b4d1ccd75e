"""Admin for runtime sessions and executions.

Sessions are inspected here and ended through the session service (with the acting admin
recorded), after a confirmation page; they are never added or edited by hand. Executions
are cancelled through the execution service. List pages make no per-row queries: related
rows are joined, socket counts and the next expiry annotated.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import PermissionDenied
from django.db.models import Count, QuerySet
from django.db.models.functions import Least
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.views.decorators.http import require_http_methods

from core.admin import IdOrEmailSearch, ReadOnlyAdmin, UserEmailFilter, admin_caller, email_column, short_id
from core.exceptions import ExecutionFinished
from realtime.models import Connection
from sessions_runtime.executions import execution_cancel
from sessions_runtime.models import EndReason, Execution, RuntimeSession, SessionStatus
from sessions_runtime.services import END_NOTE_MAX_LENGTH, session_end, sessions_end
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


def progress_text(execution: Execution) -> str:
    """'12/40 (30%), 1 failed' from the handler's counters; '-' before it reports any."""
    progress = execution.progress or {}
    total, processed, failed = (int(progress.get(k) or 0) for k in ("total", "processed", "failed"))
    if not total and not processed:
        return "-"
    text = f"{processed}/{total} ({processed * 100 // total}%)" if total else f"{processed}"
    return f"{text}, {failed} failed" if failed else text


class EndSessionsForm(forms.Form):
    note = forms.CharField(
        required=False, max_length=END_NOTE_MAX_LENGTH, widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        help_text=f"Optional, kept in the audit trail beside the reason 'admin' (at most {END_NOTE_MAX_LENGTH} characters).",
    )


class ConnectionInline(admin.TabularInline):
    model = Connection
    extra = 0
    can_delete = False
    fields = ["id", "opened_at", "client_address", "user_agent", "server_instance", "disconnect"]
    readonly_fields = fields

    @admin.display(description="")
    def disconnect(self, connection: Connection) -> str:
        """A button that posts the page's form (its CSRF token) to the connection admin's
        disconnect view (`realtime.admin`), which comes back here."""
        url = reverse("admin:realtime_connection_disconnect", args=[connection.pk])
        back = reverse("admin:sessions_runtime_runtimesession_change", args=[connection.session_id])
        return format_html('<button type="submit" class="button" formaction="{}" formmethod="post" name="next" '
                           'value="{}">Disconnect</button>', url, back)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        allowed = request.user.has_perm("realtime.disconnect_connection")
        return [f for f in self.fields if f != "disconnect" or allowed]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ExecutionInline(admin.TabularInline):
    model = Execution
    extra = 0
    can_delete = False
    fields = ["id", "intent_type", "status", "progress_shown", "created_at", "finished_at"]
    readonly_fields = fields
    show_change_link = True

    @admin.display(description="progress")
    def progress_shown(self, execution: Execution) -> str:
        return progress_text(execution)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(RuntimeSession)
class RuntimeSessionAdmin(ReadOnlyAdmin):
    # What an operator needs, narrow enough for 1366 px; the full id is on the page.
    list_display = [
        "short_id", email_column("user__email", "user"), "tenant", "status_shown", "created_at", "last_seen_at",
        "next_expiry", "live_sockets", "ended",
    ]
    list_display_links = ["short_id"]
    list_select_related = ["user", "tenant"]
    list_filter = [EffectiveStatusFilter, UserEmailFilter, "tenant"]
    date_hierarchy = "created_at"
    search_fields = ["user__email", "tenant__slug", "tenant__name"]
    ordering = ["-created_at"]
    show_full_result_count = False
    actions = ["end_sessions"]
    inlines = [ConnectionInline, ExecutionInline]
    change_form_template = "admin/sessions_runtime/runtimesession/change_form.html"
    fields = [
        "id", "user", "tenant", "status_shown", "created_at", "last_seen_at", "idle_expires_at", "expires_at",
        "ended_at", "end_reason", "ended_by_type", "ended_by", "metadata_shown", "intent_shown", "state_shown",
    ]
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).annotate(
            socket_count=Count("connections"), next_expiry_at=Least("idle_expires_at", "expires_at")
        )

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        try:
            return queryset.filter(pk=uuid.UUID(search_term.strip())), False
        except ValueError:
            return super().get_search_results(request, queryset, search_term)

    @admin.display(description="id", ordering="id")
    def short_id(self, session: RuntimeSession) -> str:
        return short_id(session.pk)

    @admin.display(description="status")
    def status_shown(self, session: RuntimeSession) -> str:
        return session.effective_status()

    @admin.display(description="next expiry", ordering="next_expiry_at")
    def next_expiry(self, session: RuntimeSession) -> Any:
        """The sooner of the idle and absolute expiry, for an active session (the idle one
        usually comes first)."""
        if session.status != SessionStatus.ACTIVE:
            return None
        return min(session.idle_expires_at, session.expires_at)

    @admin.display(description="ended (reason, by)", ordering="end_reason")
    def ended(self, session: RuntimeSession) -> str:
        """Why and by which kind of actor (admin, command, user, system): the reason alone
        ("admin") does not say whether a person in the admin or a script ended it."""
        return session.ended_shown()

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
    def end_sessions(self, request: HttpRequest, queryset: QuerySet[RuntimeSession]) -> TemplateResponse | None:
        """First a confirmation page listing the sessions (as Django's delete action does),
        with an optional note; ended on its POST with `post=yes`."""
        form = EndSessionsForm(request.POST if request.POST.get("post") == "yes" else None)
        if form.is_bound and form.is_valid():
            ended = sessions_end(
                sessions=RuntimeSession.objects.filter(pk__in=queryset.values("pk")),
                reason=EndReason.ADMIN, caller=admin_caller(request), note=form.cleaned_data["note"].strip(),
            )
            self.message_user(request, f"Ended {ended} sessions; their sockets are closing.", messages.SUCCESS)
            return None
        targets = list(queryset.select_related("user", "tenant").filter(status=SessionStatus.ACTIVE))
        return self._end_confirmation(request, targets=targets, form=form, action="end_sessions",
                                      selected=request.POST.getlist(ACTION_CHECKBOX_NAME))

    def _end_confirmation(
        self, request: HttpRequest, *, targets: list[RuntimeSession], form: EndSessionsForm,
        action: str | None = None, selected: list[str] | None = None, back_url: str | None = None,
    ) -> TemplateResponse:
        context = {
            **self.admin_site.each_context(request),
            "title": "End sessions" if action else "End session",
            "opts": self.model._meta,
            "targets": targets,
            "form": form,
            "action": action,
            "selected": selected or [],
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
            "changelist_url": reverse("admin:sessions_runtime_runtimesession_changelist"),
            "back_url": back_url or reverse("admin:sessions_runtime_runtimesession_changelist"),
        }
        return TemplateResponse(request, "admin/sessions_runtime/runtimesession/end_confirmation.html", context)

    def get_urls(self) -> list[Any]:
        end = self.admin_site.admin_view(require_http_methods(["GET", "POST"])(self.end_view))
        return [path("<uuid:session_id>/end/", end, name="sessions_runtime_runtimesession_end"), *super().get_urls()]

    def end_view(self, request: HttpRequest, session_id: uuid.UUID) -> HttpResponse:
        """The "End session" button of a session's page: GET confirms, POST ends it through
        `session_end` (CSRF-checked by the admin site)."""
        if not self.has_end_permission(request):
            raise PermissionDenied
        session = get_object_or_404(RuntimeSession.objects.select_related("user", "tenant"), pk=session_id)
        page = reverse("admin:sessions_runtime_runtimesession_change", args=[session.pk])
        form = EndSessionsForm(request.POST if request.method == "POST" else None)
        if form.is_bound and form.is_valid():
            if session_end(session_id=session.pk, reason=EndReason.ADMIN, caller=admin_caller(request),
                           note=form.cleaned_data["note"].strip()):
                self.message_user(request, "Session ended; its sockets are closing.", messages.SUCCESS)
            else:
                self.message_user(request, "The session had already ended.", messages.WARNING)
            return HttpResponseRedirect(page)
        targets = [session] if session.status == SessionStatus.ACTIVE else []
        return self._end_confirmation(request, targets=targets, form=form, back_url=page)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None) -> HttpResponse:
        extra_context = {**(extra_context or {}), "can_end_session": self.has_end_permission(request)}
        return super().change_view(request, object_id, form_url, extra_context)


@admin.register(Execution)
class ExecutionAdmin(IdOrEmailSearch, ReadOnlyAdmin):
    list_display = [
        "short_id", "intent_type", "status", "progress_shown", email_column("user__email", "user"), "tenant",
        "session_link", "created_at", "finished_at",
    ]
    list_display_links = ["short_id"]
    list_select_related = ["user", "tenant"]
    list_filter = ["status", "intent_type"]
    search_fields = ["=id", "user__email"]
    actions = ["cancel_executions"]
    fields = [
        "id", "intent_type", "status", "session", "user", "tenant", "progress_shown", "result_shown", "error_shown",
        "cancel_requested", "attempts", "worker", "created_at", "started_at", "finished_at", "heartbeat_at",
    ]
    readonly_fields = fields

    @admin.display(description="result")
    def result_shown(self, execution: Execution) -> str:
        return _pretty(execution.result)

    @admin.display(description="error")
    def error_shown(self, execution: Execution) -> str:
        return _pretty(execution.error)

    @admin.display(description="id", ordering="id")
    def short_id(self, execution: Execution) -> str:
        return short_id(execution.pk)

    @admin.display(description="progress")
    def progress_shown(self, execution: Execution) -> str:
        return progress_text(execution)

    @admin.display(description="session", ordering="session_id")
    def session_link(self, execution: Execution) -> str:
        url = reverse("admin:sessions_runtime_runtimesession_change", args=[execution.session_id])
        return format_html('<a href="{}">{}</a>', url, short_id(execution.session_id))

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("sessions_runtime.cancel_execution")

    @admin.action(description="Cancel selected executions", permissions=["cancel"])
    def cancel_executions(self, request: HttpRequest, queryset: QuerySet[Execution]) -> None:
        """Through the execution service, one by one: a created one is cancelled at once, a
        running one at its handler's next progress report; finished ones are left alone."""
        cancelled = finished = 0
        caller = admin_caller(request)
        for execution in queryset:
            try:
                execution_cancel(execution=execution, caller=caller)
                cancelled += 1
            except ExecutionFinished:
                finished += 1
        note = f" {finished} had already finished." if finished else ""
        self.message_user(request, f"Cancelling {cancelled} executions.{note}", messages.SUCCESS)
