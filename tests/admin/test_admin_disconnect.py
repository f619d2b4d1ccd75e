"""Disconnecting one socket from the admin: the "Disconnect" button beside each socket on
its session's page and the connection list's action, both through `socket_disconnect`,
audited with the admin and their address, and only with `realtime.disconnect_connection`."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from rest_framework.test import APIClient

from accounts.models import User
from core.events import SOCKET_DISCONNECT
from core.models import ActorType, AuditEvent, SessionEvent
from realtime.models import Connection
from sessions_runtime.models import RuntimeSession
from tests import factories

pytestmark = pytest.mark.django_db


def _socket() -> Connection:
    user = factories.make_user()
    session = RuntimeSession.objects.get(pk=factories.login(APIClient(), user)["session_id"])
    return Connection.objects.create(session=session, user=user, channel_name=f"specific.{session.pk.hex}!1",
                                     server_instance="web-1:8001:ab", client_address="203.0.113.5")


def _page(connection: Connection) -> str:
    return f"/admin/sessions_runtime/runtimesession/{connection.session_id}/change/"


def _disconnects(connection: Connection) -> list[dict]:
    return list(SessionEvent.objects.filter(session_id=connection.session_id, kind=SOCKET_DISCONNECT)
                .values_list("data", flat=True))


def test_the_disconnect_button_beside_a_socket_on_its_sessions_page(admin_client, staff):
    connection = _socket()
    page = admin_client.get(_page(connection)).content.decode()
    url = f"/admin/realtime/connection/{connection.pk}/disconnect/"
    assert f'formaction="{url}"' in page and f'value="{_page(connection)}">Disconnect</button>' in page

    response = admin_client.post(url, {"next": _page(connection)}, REMOTE_ADDR="198.51.100.23")
    assert response.status_code == 302 and response["Location"] == _page(connection)
    assert _disconnects(connection) == [{"channel_name": connection.channel_name, "close_code": 4001}]
    audit = AuditEvent.objects.get(kind=AuditEvent.Kind.SOCKET_DISCONNECTED)
    assert (audit.actor_type, audit.actor_id, audit.client_address) == (ActorType.ADMIN, staff.pk, "198.51.100.23")
    assert audit.data["socket_address"] == "203.0.113.5"
    # Somewhere else than this site is not where it goes back to.
    assert admin_client.post(url, {"next": "https://evil.example/"})["Location"] == "/admin/realtime/connection/"


def test_a_socket_already_gone_says_so(admin_client):
    connection = _socket()
    url = f"/admin/realtime/connection/{connection.pk}/disconnect/"
    connection.delete()
    assert "had already closed" in admin_client.post(url, {"next": _page(connection)}, follow=True).content.decode()
    assert not AuditEvent.objects.filter(kind=AuditEvent.Kind.SOCKET_DISCONNECTED).exists()


def test_the_disconnect_action_on_the_connection_list(admin_client):
    one, other = _socket(), _socket()
    response = admin_client.post("/admin/realtime/connection/",
                                 {"action": "disconnect_sockets", "_selected_action": [one.pk, other.pk]}, follow=True)
    assert "Disconnecting 2 sockets" in response.content.decode()
    assert len(_disconnects(one)) == len(_disconnects(other)) == 1
    assert AuditEvent.objects.filter(kind=AuditEvent.Kind.SOCKET_DISCONNECTED).count() == 2


def test_disconnecting_needs_its_permission_a_post_and_csrf(client, staff):
    connection = _socket()
    url = f"/admin/realtime/connection/{connection.pk}/disconnect/"
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(staff)
    assert strict.post(url, {}).status_code == 403

    viewer = User.objects.create_user(email="viewer@example.com", password=factories.PASSWORD, is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(codename__in=["view_runtimesession", "view_connection"]))
    client.force_login(viewer)
    assert "Disconnect</button>" not in client.get(_page(connection)).content.decode()
    assert "disconnect_sockets" not in client.get("/admin/realtime/connection/").content.decode()
    assert client.post(url, {}).status_code == 403
    assert client.get(url).status_code in (403, 405)
    assert _disconnects(connection) == []
