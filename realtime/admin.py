"""Admin for live sockets and serving processes: who is connected, to which session, since
when, from where, and on which process; one socket can be disconnected (through
`realtime.disconnects.socket_disconnect`, with the acting admin audited)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST
from django.utils.html import format_html
from django.utils.text import Truncator

from core.admin import ReadOnlyAdmin, UserEmailFilter, address_shown, admin_caller, email_column, short_id
from core.exceptions import CloseCode
from realtime.disconnects import socket_disconnect
from realtime.models import Connection, ServerInstance

USER_AGENT_SHOWN = 60  # characters on the list page; the whole string is on the detail page


@admin.register(Connection)
class ConnectionAdmin(ReadOnlyAdmin):
    list_display = [
        "id", email_column("user__email", "user"), "session_link", "opened_at", "address", "user_agent_shown",
        "server_instance",
    ]
    list_display_links = ["id"]
    list_select_related = ["user"]
    list_filter = ["server_instance", UserEmailFilter]
    search_fields = ["=session__id", "user__email", "client_address", "channel_name"]
    fields = ["id", "user", "session", "opened_at", "client_address", "user_agent", "server_instance", "channel_name"]
    actions = ["disconnect_sockets"]

    @admin.display(description="session", ordering="session_id")
    def session_link(self, connection: Connection) -> str:
        url = reverse("admin:sessions_runtime_runtimesession_change", args=[connection.session_id])
        return format_html('<a href="{}">{}</a>', url, short_id(connection.session_id))

    @admin.display(description="client address", ordering="client_address")
    def address(self, connection: Connection) -> str:
        return address_shown(connection.client_address)

    @admin.display(description="user agent", ordering="user_agent")
    def user_agent_shown(self, connection: Connection) -> str:
        return format_html('<span title="{}">{}</span>', connection.user_agent,
                           Truncator(connection.user_agent).chars(USER_AGENT_SHOWN) or "-")

    def has_disconnect_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("realtime.disconnect_connection")

    @admin.action(
        description=f"Disconnect selected sockets (they close with {int(CloseCode.DISCONNECTED)}; "
        "the client may reconnect: end the session to keep it out)",
        permissions=["disconnect"],
    )
    def disconnect_sockets(self, request: HttpRequest, queryset: QuerySet[Connection]) -> None:
        caller = admin_caller(request)
        asked = sum(socket_disconnect(connection_id=pk, caller=caller) is not None
                    for pk in queryset.values_list("pk", flat=True))
        self.message_user(request, f"Disconnecting {asked} sockets; each closes on the process holding it.",
                          messages.SUCCESS)

    def get_urls(self) -> list[Any]:
        disconnect = self.admin_site.admin_view(require_POST(self.disconnect_view))
        return [path("<int:connection_id>/disconnect/", disconnect, name="realtime_connection_disconnect"),
                *super().get_urls()]

    def disconnect_view(self, request: HttpRequest, connection_id: int) -> HttpResponse:
        """The "Disconnect" button beside a socket on its session's page: POST only
        (CSRF-checked by the admin site), then back to the page it was pressed on."""
        if not self.has_disconnect_permission(request):
            raise PermissionDenied
        if socket_disconnect(connection_id=connection_id, caller=admin_caller(request)) is None:
            self.message_user(request, "That socket had already closed.", messages.WARNING)
        else:
            self.message_user(request, f"Disconnecting socket {connection_id}; it closes on the process holding it.",
                              messages.SUCCESS)
        back = request.POST.get("next", "")
        if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
            back = reverse("admin:realtime_connection_changelist")
        return HttpResponseRedirect(back)


@admin.register(ServerInstance)
class ServerInstanceAdmin(ReadOnlyAdmin):
    list_display = ["id", "started_at", "last_heartbeat_at"]
