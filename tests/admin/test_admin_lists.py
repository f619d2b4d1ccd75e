"""What the operators' lists show: who ended a session (the kind of actor, not only the
reason), ids short with the whole id at hand, the sessions' created column, date hierarchy
and user filter, and the product's name and icon on every admin page."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import User
from core.models import ActorType
from realtime.models import Connection
from sessions_runtime.models import RuntimeSession
from tests import factories

pytestmark = pytest.mark.django_db
SESSIONS = "/admin/sessions_runtime/runtimesession/"


def _session(**user_fields) -> RuntimeSession:
    user = factories.make_user(**user_fields)
    return RuntimeSession.objects.get(pk=factories.login(APIClient(), user)["session_id"])


def _result_list(page: str) -> str:
    if 'id="result_list"' not in page:
        return ""
    table = page[page.index('id="result_list"'):]
    return table[: table.index("</table>")]


def test_a_session_ended_by_a_command_is_listed_as_ended_by_the_command(admin_client):
    by_command, by_admin = _session(), _session()
    call_command("sessions", "end", str(by_command.pk), "--yes", stdout=open("/dev/null", "w"))
    admin_client.post(f"{SESSIONS}{by_admin.pk}/end/", {"note": ""})
    page = admin_client.get(SESSIONS).content.decode()
    table = _result_list(page)
    assert "Ended by an administrator" not in page
    assert "admin, by command" in table and "admin, by admin" in table
    assert RuntimeSession.objects.get(pk=by_command.pk).ended_by_type == ActorType.COMMAND


def test_expiry_and_logout_are_listed_as_by_system_and_by_user(admin_client):
    expired, logged_out = _session(), _session()
    RuntimeSession.objects.filter(pk=expired.pk).update(idle_expires_at=timezone.now() - timedelta(seconds=1))
    call_command("sessions", "expire", "-v", "0")
    body = factories.login(APIClient(), logged_out.user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {body['access_token']}")
    assert client.post("/api/auth/logout", {"refresh_token": body["refresh_token"]}, format="json").status_code < 300
    table = _result_list(admin_client.get(SESSIONS).content.decode())
    assert "expired_idle, by system" in table and "logout, by user" in table


def test_sessions_have_a_created_column_a_date_hierarchy_and_a_user_filter(admin_client):
    alice = _session(email="alice.longname@customer-department.example.com")
    bob = _session(email="bob@example.com")
    page = admin_client.get(SESSIONS).content.decode()
    assert "column-created_at" in _result_list(page)
    assert '<nav class="toplinks">' in page  # Django's date hierarchy, by the created time
    assert 'name="user_email"' in page  # the user filter is a box, usable with any number of users
    for term, shown, hidden in (("alice.longname@customer-department.example.com", alice, bob), ("bob@", bob, alice)):
        table = _result_list(admin_client.get(SESSIONS, {"user_email": term}).content.decode())
        assert str(shown.pk) in table and str(hidden.pk) not in table
    year = alice.created_at.year
    assert str(alice.pk) in _result_list(admin_client.get(SESSIONS, {"created_at__year": year}).content.decode())
    assert str(alice.pk) not in _result_list(admin_client.get(SESSIONS, {"created_at__year": year - 1}).content.decode())
    # The box keeps the other filters: its form carries them as hidden fields.
    filtered = admin_client.get(SESSIONS, {"status": "active", "q": "example"}).content.decode()
    form = filtered[filtered.index('class="text-filter"'):]
    form = form[: form.index("</form>")]
    assert 'name="status" value="active"' in form and 'name="q" value="example"' in form


@pytest.mark.parametrize(
    "url", [SESSIONS, "/admin/sessions_runtime/execution/", "/admin/core/auditevent/", "/admin/realtime/connection/"],
)
def test_ids_are_short_on_lists_with_the_whole_id_in_the_title_and_the_text(admin_client, url):
    from tests.admin.test_admin import _populate

    _populate(1)
    session = RuntimeSession.objects.get()
    table = _result_list(admin_client.get(url).content.decode())
    whole = str(session.pk)
    head, rest = whole.split("-", 1)
    assert f'<span class="short-id" title="{whole}">{head}<span class="id-rest">-{rest}</span></span>' in table


def test_the_admin_is_titled_after_the_product_and_has_an_icon(admin_client):
    page = admin_client.get("/admin/").content.decode()
    assert "Django administration" not in page and "Django site admin" not in page
    assert "Symphainy runtime gateway" in page
    assert "<title>Operations | Symphainy admin</title>" in page
    assert '<link rel="icon" type="image/x-icon" href="/favicon.ico">' in page
    assert "/static/core/admin-lists.css" in admin_client.get("/admin/accounts/user/").content.decode()


def test_favicon_answers_for_the_admin_and_the_console(client, db):
    response = client.get("/favicon.ico")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/x-icon"
    body = b"".join(response.streaming_content) if response.streaming else response.content
    assert body[:4] == b"\x00\x00\x01\x00"  # an ICO, one image
    assert "max-age" in response["Cache-Control"]


def test_a_connections_page_names_its_whole_session_and_address(admin_client):
    session = _session()
    Connection.objects.create(session=session, user=session.user, channel_name="c1", server_instance="web-1",
                              client_address="2001:db8:85a3::8a2e:370:7334")
    table = _result_list(admin_client.get("/admin/realtime/connection/").content.decode())
    # It wraps after a colon, and an email after its @ and before a dot: never mid-word.
    assert "2001:<wbr>db8:<wbr>85a3:<wbr>:<wbr>8a2e:<wbr>370:<wbr>7334" in table and f'title="{session.pk}"' in table
    local, domain = session.user.email.split("@")
    assert f"{local}@<wbr>{domain.replace('.', '<wbr>.')}" in table
    assert User.objects.filter(pk=session.user_id).exists()
