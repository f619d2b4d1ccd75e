"""Every way a password changes ends the user's sessions, with the audit row; no way of
setting the first password of a new user ends anything (docs/security.md, "Passwords").

Each path of `CHANGES` is walked by the same test: the user's old access token is refused,
their refresh token too, the session ended with `password_changed` and the end written
to the event log (which closes sockets: the last test here shows one closing with 4409).
"""

from __future__ import annotations

import io
from typing import Callable

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.forms import SetPasswordForm
from django.contrib.auth.hashers import make_password
from django.core.management import call_command, get_commands
from django.test import Client
from rest_framework.test import APIClient

from accounts.models import User
from core.events import SESSION_ENDED
from core.models import ActorType, AuditEvent, SessionEvent
from sessions_runtime.models import EndReason, RuntimeSession, SessionStatus
from tests import factories

pytestmark = pytest.mark.django_db
NEW = "a-brand-new-passphrase-9"


def _superuser() -> User:
    return User.objects.create_superuser(email="admin@example.com", password=factories.PASSWORD)


def _admin_client() -> Client:
    client = Client()
    client.force_login(_superuser())
    return client


# --- The paths: each changes `user`'s password to NEW (or disables password login) -----
def _admin_form(user: User, monkeypatch) -> None:
    response = _admin_client().post(
        f"/admin/accounts/user/{user.pk}/password/", {"password1": NEW, "password2": NEW, "usable_password": "true"}
    )
    assert response.status_code == 302, response.content.decode()[:2000]


def _admin_form_disabling_password_login(user: User, monkeypatch) -> None:
    response = _admin_client().post(
        f"/admin/accounts/user/{user.pk}/password/", {"usable_password": "false", "unset-password": "1"}
    )
    assert response.status_code == 302, response.content.decode()[:2000]


def _admin_own_password_page(user: User, monkeypatch) -> None:
    """Django's own page where a staff user changes their own password."""
    User.objects.filter(pk=user.pk).update(is_staff=True)
    client = Client()
    client.force_login(User.objects.get(pk=user.pk))
    response = client.post(
        "/admin/password_change/",
        {"old_password": factories.PASSWORD, "new_password1": NEW, "new_password2": NEW},
    )
    assert response.status_code == 302, response.content.decode()[:2000]


def _users_set_password(user: User, monkeypatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(NEW + "\n"))
    out = io.StringIO()
    call_command("users", "set-password", user.email.upper(), "--password-stdin", stdout=out)
    assert "ended 1 session(s)" in out.getvalue()


def _changepassword(user: User, monkeypatch) -> None:
    monkeypatch.setattr("getpass.getpass", lambda prompt="Password: ": NEW)
    out = io.StringIO()
    call_command("changepassword", user.email, stdout=out)
    assert "Password changed successfully" in out.getvalue()


def _django_set_password_form(user: User, monkeypatch) -> None:
    """Django's password forms (a reset confirmation, for one) save the user themselves."""
    form = SetPasswordForm(User.objects.get(pk=user.pk), {"new_password1": NEW, "new_password2": NEW})
    assert form.is_valid(), form.errors
    form.save()


def _shell(user: User, monkeypatch) -> None:
    someone = User.objects.get(pk=user.pk)
    someone.set_password(NEW)
    someone.save()


CHANGES: dict[str, tuple[Callable[[User, object], None], str]] = {
    "admin form": (_admin_form, ActorType.ADMIN),
    "admin form, password login disabled": (_admin_form_disabling_password_login, ActorType.ADMIN),
    "admin, own password page": (_admin_own_password_page, ActorType.SYSTEM),
    "users set-password": (_users_set_password, ActorType.COMMAND),
    "changepassword": (_changepassword, ActorType.COMMAND),
    "Django's SetPasswordForm": (_django_set_password_form, ActorType.SYSTEM),
    "shell set_password + save": (_shell, ActorType.SYSTEM),
}


@pytest.mark.parametrize("path", list(CHANGES))
def test_every_password_change_ends_the_users_sessions(path, monkeypatch):
    change, actor = CHANGES[path]
    user = factories.make_user()
    body = factories.login(APIClient(), user)
    assert factories.bearer(APIClient(), body["access_token"]).get("/api/auth/me").status_code == 200

    change(user, monkeypatch)

    me = factories.bearer(APIClient(), body["access_token"]).get("/api/auth/me")
    assert me.status_code == 401 and me.json()["error"] == "session_ended"
    refresh = APIClient().post("/api/auth/refresh", {"refresh_token": body["refresh_token"]}, format="json")
    assert refresh.status_code == 401
    session = RuntimeSession.objects.get(pk=body["session_id"])
    assert session.status == SessionStatus.ENDED and session.end_reason == EndReason.PASSWORD_CHANGED
    assert SessionEvent.objects.filter(session_id=session.pk, kind=SESSION_ENDED).count() == 1
    rows = AuditEvent.objects.filter(kind=AuditEvent.Kind.PASSWORD_CHANGED, user_id=user.pk)
    assert [row.actor_type for row in rows] == [actor]
    assert not User.objects.get(pk=user.pk).check_password(factories.PASSWORD)


def test_the_new_password_logs_in_and_the_old_one_does_not(monkeypatch):
    user = factories.make_user()
    _changepassword(user, monkeypatch)
    factories.login(APIClient(), user, password=NEW)
    old = APIClient().post("/api/auth/login", {"email": user.email, "password": factories.PASSWORD}, format="json")
    assert old.status_code == 401


def test_disabling_password_login_leaves_no_password_at_all():
    """Not the empty string: an unusable password, so no password logs in."""
    user = factories.make_user()
    _admin_form_disabling_password_login(user, None)
    assert not User.objects.get(pk=user.pk).has_usable_password()


def test_manage_py_finds_the_projects_changepassword():
    assert get_commands()["changepassword"] == "accounts"


def test_changepassword_keeps_djangos_checks(monkeypatch):
    """Mismatched or rejected passwords three times change nothing and end nothing."""
    from django.core.management.base import CommandError

    user = factories.make_user()
    body = factories.login(APIClient(), user)
    answers = iter(["one-long-passphrase", "another-long-passphrase", "short", "short", "password", "password"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    with pytest.raises(CommandError, match="after 3 attempts"):
        call_command("changepassword", user.email, stdout=io.StringIO(), stderr=io.StringIO())
    assert User.objects.get(pk=user.pk).check_password(factories.PASSWORD)
    assert RuntimeSession.objects.get(pk=body["session_id"]).status == SessionStatus.ACTIVE
    assert not AuditEvent.objects.filter(kind=AuditEvent.Kind.PASSWORD_CHANGED).exists()


@pytest.mark.parametrize(
    "args, stdin, message",
    [
        (["ghost@example.com", "--password-stdin"], NEW, "No user with email 'ghost@example.com'"),
        (["{email}", "--password-stdin"], "short", "Password rejected"),
        (["{email}", "--password-stdin"], "", "no password on stdin"),
    ],
)
def test_users_set_password_refusals_change_and_end_nothing(args, stdin, message, monkeypatch):
    from django.core.management.base import CommandError

    user = factories.make_user()
    body = factories.login(APIClient(), user)
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin + "\n" if stdin else ""))
    with pytest.raises(CommandError, match=message):
        call_command("users", "set-password", *(arg.format(email=user.email) for arg in args), stdout=io.StringIO())
    assert User.objects.get(pk=user.pk).check_password(factories.PASSWORD)
    assert RuntimeSession.objects.get(pk=body["session_id"]).status == SessionStatus.ACTIVE


def test_users_set_password_generates_one_when_not_given(monkeypatch):
    user = factories.make_user()
    out = io.StringIO()
    call_command("users", "set-password", user.email, stdout=out)
    shown = out.getvalue().split("Password (shown once): ")[1].strip()
    assert User.objects.get(pk=user.pk).check_password(shown)


# --- A new user's first password ends nothing --------------------------------------------
def _register(monkeypatch) -> None:
    body = {"email": "new@example.com", "password": NEW}
    assert APIClient().post("/api/auth/register", body, format="json").status_code == 201


def _users_create(monkeypatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(NEW + "\n"))
    call_command("users", "create", "new@example.com", "--password-stdin", stdout=io.StringIO())


def _admin_add_form(monkeypatch) -> None:
    response = _admin_client().post(
        "/admin/accounts/user/add/",
        {"email": "new@example.com", "name": "New", "password1": NEW, "password2": NEW, "usable_password": "true",
         "memberships-TOTAL_FORMS": "0", "memberships-INITIAL_FORMS": "0"},
    )
    assert response.status_code == 302, response.content.decode()[:3000]


def _createsuperuser(monkeypatch) -> None:
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", NEW)
    call_command("createsuperuser", "--noinput", "--email", "new@example.com", stdout=io.StringIO())


def _create_user(monkeypatch) -> None:
    User.objects.create_user(email="new@example.com", password=NEW)


FIRST_PASSWORDS = {
    "register": _register,
    "users create": _users_create,
    "admin add form": _admin_add_form,
    "createsuperuser": _createsuperuser,
    "create_user (seed_demo, factories)": _create_user,
}


@pytest.mark.parametrize("path", list(FIRST_PASSWORDS))
def test_a_new_users_first_password_ends_nothing(path, monkeypatch):
    other = factories.make_user()
    other_body = factories.login(APIClient(), other)
    consequences: list[User] = []
    monkeypatch.setattr("accounts.services.user_password_changed", lambda *, user, caller: consequences.append(user))

    FIRST_PASSWORDS[path](monkeypatch)

    user = User.objects.get(email="new@example.com")
    assert user.check_password(NEW)
    assert consequences == []
    assert not AuditEvent.objects.filter(kind=AuditEvent.Kind.PASSWORD_CHANGED).exists()
    assert RuntimeSession.objects.get(pk=other_body["session_id"]).status == SessionStatus.ACTIVE


def test_createsuperuser_cannot_change_an_existing_users_password(monkeypatch):
    from django.core.management.base import CommandError

    user = factories.make_user(email="taken@example.com")
    body = factories.login(APIClient(), user)
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", NEW)
    with pytest.raises(CommandError, match="already taken"):
        call_command("createsuperuser", "--noinput", "--email", "taken@example.com", stdout=io.StringIO())
    assert User.objects.get(pk=user.pk).check_password(factories.PASSWORD)
    assert RuntimeSession.objects.get(pk=body["session_id"]).status == SessionStatus.ACTIVE


def test_a_hash_upgrade_at_login_is_no_password_change(settings):
    """Django re-hashes a password stored with an older hasher when it is next checked
    (set_password, then save): that must not end the user's other sessions."""
    settings.PASSWORD_HASHERS = [*settings.PASSWORD_HASHERS, "django.contrib.auth.hashers.MD5PasswordHasher"]
    user = factories.make_user()
    first = factories.login(APIClient(), user)
    User.objects.filter(pk=user.pk).update(password=make_password(factories.PASSWORD, hasher="md5"))
    factories.login(APIClient(), user)
    assert not User.objects.get(pk=user.pk).password.startswith("md5$")  # it was upgraded
    assert RuntimeSession.objects.get(pk=first["session_id"]).status == SessionStatus.ACTIVE
    assert not AuditEvent.objects.filter(kind=AuditEvent.Kind.PASSWORD_CHANGED).exists()


def test_a_rolled_back_password_change_ends_nothing():
    """The ends are written in the transaction that stores the password."""
    from django.db import transaction

    user = factories.make_user()
    body = factories.login(APIClient(), user)
    with pytest.raises(RuntimeError), transaction.atomic():
        _shell(user, None)
        raise RuntimeError("rolled back")
    assert RuntimeSession.objects.get(pk=body["session_id"]).status == SessionStatus.ACTIVE
    assert not SessionEvent.objects.filter(session_id=body["session_id"], kind=SESSION_ENDED).exists()
    assert User.objects.get(pk=user.pk).check_password(factories.PASSWORD)


# --- The socket closes ---------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
async def test_changepassword_closes_a_live_socket_with_4409_within_a_second(monkeypatch):
    from tests.sockets import login_new_user, open_ready

    user, body = await login_new_user()
    sock, _ = await open_ready(body["access_token"])
    await database_sync_to_async(_changepassword)(user, monkeypatch)
    assert await sock.receive_close(timeout=1) == 4409
