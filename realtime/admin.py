from __future__ import annotations

from django.contrib import admin

from core.admin import ReadOnlyAdmin
from realtime.models import Connection, ServerInstance


@admin.register(Connection)
class ConnectionAdmin(ReadOnlyAdmin):
    list_display = ["channel_name", "session", "user", "server_instance", "opened_at", "client_address"]
    list_select_related = ["user", "session"]
    list_filter = ["server_instance"]
    search_fields = ["=session__id", "user__email", "channel_name"]


@admin.register(ServerInstance)
class ServerInstanceAdmin(ReadOnlyAdmin):
    list_display = ["id", "started_at", "last_heartbeat_at"]
