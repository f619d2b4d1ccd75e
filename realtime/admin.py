"""Admin for live sockets and serving processes, read-only: who is connected, to which
session, since when, from where, and on which process."""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html
from django.utils.text import Truncator

from core.admin import ReadOnlyAdmin, short_id
from realtime.models import Connection, ServerInstance

USER_AGENT_SHOWN = 60  # characters on the list page; the whole string is on the detail page


@admin.register(Connection)
class ConnectionAdmin(ReadOnlyAdmin):
    list_display = ["user", "session_link", "opened_at", "client_address", "user_agent_shown", "server_instance"]
    list_display_links = ["user"]
    list_select_related = ["user"]
    list_filter = ["server_instance"]
    search_fields = ["=session__id", "user__email", "client_address", "channel_name"]
    fields = ["user", "session", "opened_at", "client_address", "user_agent", "server_instance", "channel_name"]

    @admin.display(description="session", ordering="session_id")
    def session_link(self, connection: Connection) -> str:
        url = reverse("admin:sessions_runtime_runtimesession_change", args=[connection.session_id])
        return format_html('<a href="{}">{}</a>', url, short_id(connection.session_id))

    @admin.display(description="user agent", ordering="user_agent")
    def user_agent_shown(self, connection: Connection) -> str:
        return format_html('<span title="{}">{}</span>', connection.user_agent,
                           Truncator(connection.user_agent).chars(USER_AGENT_SHOWN) or "-")


@admin.register(ServerInstance)
class ServerInstanceAdmin(ReadOnlyAdmin):
    list_display = ["id", "started_at", "last_heartbeat_at"]
