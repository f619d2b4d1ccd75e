"""The operator commands (`sessions`, `tenants`, `users`, `runtime_sweep`) through
call_command: their output, their effect on the database and the audit trail, and a
one-line CommandError for every bad argument."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, timedelta
from io import StringIO
from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from django.core.management import call_command, load_command_class
from django.core.management.base import CommandError
from django.utils import timezone

from accounts.models import Membership, Role, Tenant, TenantStatus, User
from accounts.services import auth_login
from core.models import ActorType, AuditEvent
from realtime.models import Connection, ServerInstance
from sessions_runtime.models import (
    EndReason,
    Execution,
    ExecutionStatus,
    Intent,
    RuntimeSession,
    SessionStatus,
)
from sessions_runtime.state_writes import session_state_write
from tests import factories

pytestmark = pytest.mark.django_db

BASE_DIR = Path(__file__).resolve().parents[2]


def run(*args: str, **options) -> str:
    out = StringIO()
    call_command(*args, stdout=out, **options)
    return out.getvalue()


def new_session(user: User, tenant: Tenant | None = None) -> RuntimeSession:
    """A real session, made by logging in through the accounts service."""
    tenant_id = tenant.pk if tenant is not None else None
    return auth_login(email=user.email, password=factories.PASSWORD, tenant_id=tenant_id).session


def status_of(session: RuntimeSession) -> str:
    return RuntimeSession.objects.get(pk=session.pk).status


def make_past_idle(session: RuntimeSession) -> None:
    RuntimeSession.objects.filter(pk=session.pk).update(idle_expires_at=timezone.now() - timedelta(minutes=1))


def ended_audit_rows(session: RuntimeSession):
    return AuditEvent.objects.filter(kind=AuditEvent.Kind.SESSION_ENDED, session_id=session.pk)


@pytest.fixture
def no_input(monkeypatch):
    """Fail the test if a command asks anything."""

    def refuse(prompt: str = "") -> str:
        raise AssertionError(f"unexpected prompt: {prompt}")

    monkeypatch.setattr("builtins.input", refuse)


# --- Help and parsing ---------------------------------------------------------------
def _subparsers(name: str, app: str):
    parser = load_command_class(app, name).create_parser("manage.py", name)
    (action,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return parser, action.choices


@pytest.mark.parametrize(
    "name, app, subcommands",
    [
        ("sessions", "sessions_runtime", {"list", "show", "end", "expire"}),
        ("tenants", "accounts", {"create", "list", "add-member", "remove-member", "suspend", "activate"}),
        ("users", "accounts", {"list", "create", "set-password", "deactivate"}),
    ],
)
def test_every_subcommand_has_help(name, app, subcommands):
    parser, choices = _subparsers(name, app)
    assert set(choices) == subcommands
    for sub in subcommands:
        assert sub in parser.format_help()
        assert choices[sub].description, f"{name} {sub} has no description"
        assert choices[sub].format_help().startswith(f"usage: manage.py {name} {sub}")


@pytest.mark.parametrize("name, app", [("sessions", "sessions_runtime"), ("tenants", "accounts"), ("users", "accounts")])
def test_subcommand_help_shows_the_common_options(name, app):
    _, choices = _subparsers(name, app)
    for sub, parser in choices.items():
        text = parser.format_help()
        for flag in ("-v {0,1,2,3}, --verbosity", "--settings", "--traceback", "--no-color", "--skip-checks"):
            assert flag in text, f"{name} {sub} help lacks {flag}"


@pytest.mark.parametrize("args", [("sessions", "expire", "-v", "0"), ("sessions", "-v", "0", "expire"),
                                  ("sessions", "expire", "--verbosity=0", "--no-color")])
def test_common_options_after_or_before_the_subcommand(user, args):
    session = new_session(user)
    make_past_idle(session)
    assert run(*args) == ""
    assert status_of(session) == SessionStatus.EXPIRED


def test_an_option_before_the_subcommand_is_not_reset_by_the_subcommand_default(user):
    session = new_session(user)
    make_past_idle(session)
    assert run("sessions", "--verbosity", "0", "expire", "--dry-run") == ""
    assert "Would expire 1 session(s)" in run("sessions", "expire", "--dry-run", "-v", "1")


def test_the_cron_form_on_the_command_line_exits_0_and_prints_nothing(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env["SQLITE_PATH"] = str(tmp_path / "cli.sqlite3")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=BASE_DIR, env=env, check=True, timeout=120)
    result = subprocess.run(
        [sys.executable, "manage.py", "sessions", "expire", "-v", "0"],
        cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_a_bad_common_option_after_the_subcommand_is_a_command_error():
    with pytest.raises(CommandError, match="argument -v/--verbosity: invalid choice: 7"):
        run("sessions", "expire", "-v", "7")


def test_runtime_sweep_has_help():
    parser = load_command_class("realtime", "runtime_sweep").create_parser("manage.py", "runtime_sweep")
    assert "dead server processes" in parser.format_help()


@pytest.mark.parametrize("name", ["sessions", "tenants", "users"])
def test_a_subcommand_is_required(name):
    with pytest.raises(CommandError, match="the following arguments are required: {"):
        run(name)


def test_unknown_subcommand_is_a_command_error():
    with pytest.raises(CommandError, match="invalid choice: 'drop'"):
        run("sessions", "drop")


def test_a_command_error_on_the_command_line_is_one_line_without_a_traceback(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env["SQLITE_PATH"] = str(tmp_path / "cli.sqlite3")
    result = subprocess.run(
        [sys.executable, "manage.py", "sessions", "--skip-checks", "show", "not-a-uuid"],
        cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == "CommandError: 'not-a-uuid' is not a session id (expected a UUID)."
    assert "Traceback" not in result.stderr


# --- sessions list --------------------------------------------------------------------
def test_list_shows_a_table_of_sessions_newest_first(user):
    first, second = new_session(user), new_session(user)
    out = run("sessions", "list")
    lines = out.splitlines()
    assert lines[0].split() == [
        "id", "user", "tenant", "status", "created", "last", "seen", "expires", "sockets", "ended", "(reason,", "by)",
    ]
    assert lines[1].startswith(str(second.pk)) and lines[2].startswith(str(first.pk))
    assert user.email in lines[1] and "active" in lines[1]
    assert first.tenant.slug in lines[2]


def test_list_filters_by_user_tenant_and_status(user, tenant):
    other = factories.make_user()
    mine, theirs = new_session(user), new_session(other)
    ended = new_session(user)
    run("sessions", "end", str(ended.pk), "--yes")

    by_user = run("sessions", "list", "--user", other.email.upper())
    assert str(theirs.pk) in by_user and str(mine.pk) not in by_user

    by_tenant = run("sessions", "list", "--tenant", tenant.slug)
    assert str(mine.pk) in by_tenant and str(theirs.pk) not in by_tenant

    active = run("sessions", "list", "--status", "active")
    assert str(mine.pk) in active and str(ended.pk) not in active
    only_ended = run("sessions", "list", status="ended")  # an option given the call_command way
    assert str(ended.pk) in only_ended and str(mine.pk) not in only_ended
    assert "admin" in only_ended


def test_list_applies_expiry_on_read(user):
    session = new_session(user)
    make_past_idle(session)
    assert str(session.pk) in run("sessions", "list", "--status", "expired")
    assert str(session.pk) not in run("sessions", "list", "--status", "active")
    assert status_of(session) == SessionStatus.ACTIVE  # listing writes nothing


def test_list_limit_and_json_lines(user):
    sessions = [new_session(user) for _ in range(3)]
    out = run("sessions", "list", "--json", "--limit", "2")
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["session_id"] for r in rows] == [str(sessions[2].pk), str(sessions[1].pk)]
    assert rows[0]["user_email"] == user.email
    assert rows[0]["status"] == "active" and rows[0]["end_reason"] is None
    assert set(rows[0]) >= {"tenant_slug", "created_at", "last_seen_at", "expires_at", "idle_expires_at", "ended_at"}


def test_list_has_a_sockets_column_in_text_and_json(user):
    quiet, busy = new_session(user), new_session(user)
    for n in range(3):
        Connection.objects.create(session=busy, user=user, channel_name=f"chan-{n}", server_instance="web-1")
    lines = run("sessions", "list").splitlines()
    assert lines[0].split()[8] == "sockets"
    counts = {line.split()[0]: line.split()[10] for line in lines[1:]}  # the times are two words each
    assert counts == {str(busy.pk): "3", str(quiet.pk): "0"}
    rows = {r["session_id"]: r["sockets"] for r in map(json.loads, run("sessions", "list", "--json").splitlines())}
    assert rows == {str(busy.pk): 3, str(quiet.pk): 0}


def test_list_names_who_ended_a_session(user, no_input):
    session = new_session(user)
    run("sessions", "end", str(session.pk), "--yes")
    (line,) = run("sessions", "list").splitlines()[1:]
    assert line.endswith("admin, by command")


def test_list_with_nothing_to_show(db):
    assert run("sessions", "list") == "No sessions.\n"
    assert run("sessions", "list", "--json") == ""


@pytest.mark.parametrize(
    "args, message",
    [
        (["--user", "nobody@example.com"], "No user with email 'nobody@example.com'"),
        (["--tenant", "no-such-tenant"], "No tenant with slug 'no-such-tenant'"),
        (["--status", "sleeping"], "argument --status: invalid choice: 'sleeping'"),
        (["--limit", "0"], "argument --limit: expected a whole number of at least 1"),
        (["--limit", "many"], "argument --limit: expected a whole number"),
    ],
)
def test_list_bad_arguments(db, args, message):
    with pytest.raises(CommandError, match=message):
        run("sessions", "list", *args)


def test_list_bad_status_given_as_keyword(db):
    with pytest.raises(CommandError, match="Unknown status 'sleeping'"):
        run("sessions", "list", status="sleeping")


# --- sessions show --------------------------------------------------------------------
def test_show_prints_fields_sockets_state_and_executions(user):
    session = new_session(user)
    agent = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
    first = Connection.objects.create(session=session, user=user, channel_name="chan-1", server_instance="web-1:8001:ab",
                                      client_address="2001:db8:85a3::8a2e:370:7334", user_agent=agent,
                                      opened_at=timezone.now() - timedelta(minutes=5))
    second = Connection.objects.create(session=session, user=user, channel_name="chan-2", server_instance="web-2:8002:cd",
                                       client_address="203.0.113.9", user_agent="curl/8.5")
    session_state_write(caller=factories.caller_for(session), session=session, data={"step": 1}, expected_version=0)
    session_state_write(caller=factories.caller_for(session), session=session, data={"step": 2}, expected_version=1)
    intent = Intent.objects.create(session=session, user=user, tenant=session.tenant, intent_type="echo")
    execution = Execution.objects.create(
        intent=intent, session=session, user=user, tenant=session.tenant, intent_type="echo",
        status=ExecutionStatus.COMPLETED,
    )
    out = run("sessions", "show", str(session.pk))
    fields = dict(line.split(None, 1) if " " in line else (line, "") for line in out.splitlines()[:3])
    assert fields["session"].strip() == str(session.pk)
    assert f"{user.email} ({user.pk})" in out
    assert "Sockets (2, oldest first):" in out
    lines = out.splitlines()
    header = lines.index("Sockets (2, oldest first):") + 1
    assert lines[header].split() == ["connection", "process", "since", "client", "address", "user", "agent"]
    assert lines[header + 1].split()[:2] == [str(first.pk), "web-1:8001:ab"]
    assert "2001:db8:85a3::8a2e:370:7334" in lines[header + 1] and lines[header + 1].endswith(agent)
    assert lines[header + 1].split()[2:4] == first.opened_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S").split()
    assert lines[header + 2].split()[:2] == [str(second.pk), "web-2:8002:cd"] and lines[header + 2].endswith("curl/8.5")
    assert "state version  2" in out
    assert str(execution.pk) in out and "completed" in out


def test_show_an_ended_session_names_reason_and_actor(user):
    session = new_session(user)
    run("sessions", "end", str(session.pk), "--yes")
    out = run("sessions", "show", str(session.pk).upper())
    assert "status         ended" in out
    assert "end reason     admin" in out
    assert "ended by       command" in out
    assert "sockets        none" in out
    assert "executions     none" in out


@pytest.mark.parametrize(
    "raw, message",
    [("not-a-uuid", "'not-a-uuid' is not a session id"), (str(uuid.UUID(int=7)), "No session with id")],
)
def test_show_bad_ids(db, raw, message):
    with pytest.raises(CommandError, match=message):
        run("sessions", "show", raw)


# --- sessions end ---------------------------------------------------------------------
def test_end_by_id_ends_the_session_and_audits_the_command(user, no_input):
    session, other = new_session(user), new_session(user)
    out = run("sessions", "end", str(session.pk), "--yes", "--reason", "ticket 42")
    assert f"Ended session {session.pk}." in out
    row = RuntimeSession.objects.get(pk=session.pk)
    assert (row.status, row.end_reason, row.ended_by_type) == (SessionStatus.ENDED, EndReason.ADMIN, ActorType.COMMAND)
    assert row.ended_at is not None
    (audit,) = ended_audit_rows(session)
    assert audit.actor_type == ActorType.COMMAND
    assert audit.data == {"reason": "admin", "note": "ticket 42"}
    assert status_of(other) == SessionStatus.ACTIVE


def test_end_is_idempotent(user, no_input):
    session = new_session(user)
    run("sessions", "end", str(session.pk), "--yes")
    again = run("sessions", "end", str(session.pk), "--yes")
    assert again == f"Session {session.pk} is already ended (admin).\n"
    assert ended_audit_rows(session).count() == 1


def test_end_asks_and_no_ends_nothing(user, monkeypatch):
    session = new_session(user)
    prompts = []
    monkeypatch.setattr("builtins.input", lambda prompt="": prompts.append(prompt) or "n")
    out = run("sessions", "end", str(session.pk))
    assert prompts == ["End 1 session(s)? [y/N] "]
    assert out.rstrip().endswith("Nothing ended.")
    assert status_of(session) == SessionStatus.ACTIVE
    assert not ended_audit_rows(session).exists()


@pytest.mark.parametrize("answer", ["", "no", "maybe"])
def test_anything_but_yes_ends_nothing(user, monkeypatch, answer):
    session = new_session(user)
    monkeypatch.setattr("builtins.input", lambda prompt="": answer)
    run("sessions", "end", "--user", user.email)
    assert status_of(session) == SessionStatus.ACTIVE


def test_end_asks_and_yes_ends(user, monkeypatch):
    session = new_session(user)
    monkeypatch.setattr("builtins.input", lambda prompt="": "Y")
    assert f"Ended session {session.pk}." in run("sessions", "end", str(session.pk))
    assert status_of(session) == SessionStatus.ENDED


def test_end_without_a_terminal_fails_and_ends_nothing(user, monkeypatch):
    session = new_session(user)

    def closed(prompt=""):
        raise EOFError

    monkeypatch.setattr("builtins.input", closed)
    with pytest.raises(CommandError, match="No answer on stdin; nothing was changed. Pass --yes"):
        run("sessions", "end", str(session.pk))
    assert status_of(session) == SessionStatus.ACTIVE


def test_end_by_user_by_tenant_and_by_both(no_input):
    tenant_a, tenant_b = factories.make_tenant(), factories.make_tenant()
    alice = factories.make_user(tenant=tenant_a)
    Membership.objects.create(user=alice, tenant=tenant_b, role=Role.MEMBER)
    bob = factories.make_user(tenant=tenant_a)
    alice_a, alice_b, bob_a = new_session(alice, tenant_a), new_session(alice, tenant_b), new_session(bob, tenant_a)

    out = run("sessions", "end", "--user", alice.email, "--tenant", tenant_b.slug, "--yes")
    assert f"Ended 1 session(s) of user {alice.email} in tenant {tenant_b.slug}." in out
    assert [status_of(s) for s in (alice_a, alice_b, bob_a)] == ["active", "ended", "active"]

    run("sessions", "end", "--tenant", tenant_a.slug, "--yes")
    assert [status_of(s) for s in (alice_a, bob_a)] == ["ended", "ended"]
    assert "No active sessions for user" in run("sessions", "end", "--user", alice.email, "--yes")
    assert AuditEvent.objects.filter(kind=AuditEvent.Kind.SESSION_ENDED, actor_type=ActorType.COMMAND).count() == 3


def test_end_several_ids_mixing_active_and_ended(user, no_input):
    a, b = new_session(user), new_session(user)
    run("sessions", "end", str(a.pk), "--yes")
    out = run("sessions", "end", str(a.pk), str(b.pk), str(b.pk), "--yes")
    assert f"Session {a.pk} is already ended" in out
    assert out.count(f"Ended session {b.pk}.") == 1
    assert status_of(b) == SessionStatus.ENDED


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "Nothing to end: give session ids, --user EMAIL or --tenant SLUG."),
        (["{id}", "--user", "{email}"], "Give session ids, or --user/--tenant, not both."),
        (["not-a-uuid"], "'not-a-uuid' is not a session id"),
        (["{id}", str(uuid.UUID(int=9))], "No session with id 00000000-0000-0000-0000-000000000009; nothing was ended."),
        (["--user", "ghost@example.com"], "No user with email 'ghost@example.com'"),
        (["--tenant", "ghost"], "No tenant with slug 'ghost'"),
        (["{id}", "--reason", "x" * 201], "--reason is limited to 200 characters"),
    ],
)
def test_end_bad_arguments_end_nothing(user, no_input, args, message):
    session = new_session(user)
    args = [a.format(id=session.pk, email=user.email) for a in args]
    with pytest.raises(CommandError, match=message):
        run("sessions", "end", *args, "--yes")
    assert status_of(session) == SessionStatus.ACTIVE


# --- sessions expire ------------------------------------------------------------------
def test_expire_dry_run_changes_nothing(user, no_input):
    due, fresh = new_session(user), new_session(user)
    make_past_idle(due)
    audit_rows = AuditEvent.objects.count()
    out = run("sessions", "expire", "--dry-run")
    assert f"would expire {due.pk} (expired_idle)" in out
    assert "Would expire 1 session(s); nothing changed." in out
    assert str(fresh.pk) not in out
    assert status_of(due) == SessionStatus.ACTIVE
    assert RuntimeSession.objects.get(pk=due.pk).ended_at is None
    assert AuditEvent.objects.count() == audit_rows


def test_expire_ends_due_sessions_only(user, no_input):
    idle, old, fresh = new_session(user), new_session(user), new_session(user)
    make_past_idle(idle)
    RuntimeSession.objects.filter(pk=old.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    out = run("sessions", "expire")
    assert "Expired 2 session(s)." in out
    assert f"expired {old.pk} (expired_absolute)" in out
    reasons = dict(RuntimeSession.objects.values_list("pk", "end_reason"))
    assert (reasons[idle.pk], reasons[old.pk], reasons[fresh.pk]) == ("expired_idle", "expired_absolute", "")
    assert status_of(idle) == status_of(old) == SessionStatus.EXPIRED
    assert run("sessions", "expire") == "Expired 0 session(s).\n"


def test_expire_is_silent_at_verbosity_zero(user):
    make_past_idle(new_session(user))
    assert run("sessions", "expire", verbosity=0) == ""
    assert not RuntimeSession.objects.filter(status=SessionStatus.ACTIVE).exists()


# --- tenants --------------------------------------------------------------------------
def test_tenants_create_and_list(db):
    out = run("tenants", "create", "acme", "--name", "Acme Inc")
    tenant = Tenant.objects.get(slug="acme")
    assert out == f"Created tenant 'acme' (Acme Inc), id {tenant.pk}.\n"
    assert (tenant.name, tenant.status) == ("Acme Inc", TenantStatus.ACTIVE)
    factories.make_user(tenant=tenant)
    listing = run("tenants", "list").splitlines()
    assert listing[0].split()[:4] == ["slug", "name", "status", "members"]
    (acme,) = [line for line in listing if line.startswith("acme ")]
    assert acme.split()[:6] == ["acme", "Acme", "Inc", "active", "1", "0"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["taken", "--name", "Again"], "A tenant with slug 'taken' already exists."),
        (["Not A Slug", "--name", "X"], "'Not A Slug' is not a valid slug"),
        (["UPPER", "--name", "X"], "'UPPER' is not a valid slug"),
        (["x" * 61, "--name", "X"], "is not a valid slug"),
        (["fine", "--name", "   "], "--name must not be empty."),
        (["fine"], "the following arguments are required: --name"),
    ],
)
def test_tenants_create_bad_arguments(db, args, message):
    Tenant.objects.create(name="Taken", slug="taken")
    with pytest.raises(CommandError, match=message):
        run("tenants", "create", *args)
    assert Tenant.objects.count() == 1


def test_add_member_adds_and_changes_the_role(tenant):
    other_tenant = factories.make_tenant()
    user = factories.make_user(tenant=other_tenant)
    out = run("tenants", "add-member", tenant.slug, user.email, "--role", "admin")
    assert out == f"Added {user.email} to {tenant.slug} as admin.\n"
    membership = Membership.objects.get(user=user, tenant=tenant)
    assert (membership.role, membership.is_primary) == (Role.ADMIN, False)

    out = run("tenants", "add-member", tenant.slug, user.email, role="viewer", primary=True)
    assert out == f"Updated {user.email} in {tenant.slug}: role admin -> viewer (primary).\n"
    assert Membership.objects.get(user=user, tenant=tenant).is_primary
    assert not Membership.objects.get(user=user, tenant=other_tenant).is_primary


def test_changing_the_role_of_a_primary_membership_keeps_it_primary(user, tenant):
    run("tenants", "add-member", tenant.slug, user.email, "--role", "owner")
    membership = Membership.objects.get(user=user, tenant=tenant)
    assert (membership.role, membership.is_primary) == (Role.OWNER, True)


@pytest.mark.parametrize(
    "args, message",
    [
        (["{slug}", "{email}", "--role", "god"], "argument --role: invalid choice: 'god'"),
        (["{slug}", "{email}"], "the following arguments are required: --role"),
        (["ghost", "{email}", "--role", "member"], "No tenant with slug 'ghost'"),
        (["{slug}", "ghost@example.com", "--role", "member"], "No user with email 'ghost@example.com'"),
    ],
)
def test_add_member_bad_arguments(user, tenant, args, message):
    newcomer = User.objects.create_user(email="new@example.com", password="x")
    args = [a.format(slug=tenant.slug, email=newcomer.email) for a in args]
    with pytest.raises(CommandError, match=message):
        run("tenants", "add-member", *args)
    assert not Membership.objects.filter(user=newcomer).exists()


def test_remove_member_ends_their_sessions_in_that_tenant_only(tenant, no_input):
    elsewhere = factories.make_tenant()
    user = factories.make_user(tenant=tenant)
    Membership.objects.create(user=user, tenant=elsewhere, role=Role.MEMBER)
    here, there = new_session(user, tenant), new_session(user, elsewhere)
    out = run("tenants", "remove-member", tenant.slug, user.email)
    assert out == f"Removed {user.email} from {tenant.slug}; ended 1 session(s).\n"
    assert not Membership.objects.filter(user=user, tenant=tenant).exists()
    row = RuntimeSession.objects.get(pk=here.pk)
    assert (row.status, row.end_reason, row.ended_by_type) == ("ended", "membership_removed", "command")
    assert status_of(there) == SessionStatus.ACTIVE
    with pytest.raises(CommandError, match=f"{user.email} is not a member of {tenant.slug}."):
        run("tenants", "remove-member", tenant.slug, user.email)


def test_suspend_ends_the_tenants_sessions(user, tenant, no_input):
    session = new_session(user)
    outsider = new_session(factories.make_user())
    assert run("tenants", "suspend", tenant.slug) == f"Tenant {tenant.slug} suspended; ended 1 session(s).\n"
    tenant.refresh_from_db()
    assert tenant.status == TenantStatus.SUSPENDED
    row = RuntimeSession.objects.get(pk=session.pk)
    assert (row.status, row.end_reason, row.ended_by_type) == ("ended", "tenant_suspended", "command")
    assert status_of(outsider) == SessionStatus.ACTIVE
    assert run("tenants", "suspend", tenant.slug) == f"Tenant {tenant.slug} was already suspended; ended 0 session(s).\n"
    with pytest.raises(CommandError, match="No tenant with slug 'ghost'"):
        run("tenants", "suspend", "ghost")


# --- users ----------------------------------------------------------------------------
def test_users_list_and_filter_by_tenant(user, tenant):
    other = factories.make_user()
    Membership.objects.create(user=other, tenant=tenant, role=Role.VIEWER)
    loner = factories.make_user()
    new_session(user)
    listing = run("users", "list")
    (line,) = [row for row in listing.splitlines() if row.startswith(user.email)]
    assert f"*{tenant.slug}:member" in line and line.split()[-3] == "1"
    assert loner.email in listing
    members = run("users", "list", "--tenant", tenant.slug)
    assert user.email in members and other.email in members and loner.email not in members
    assert f"{tenant.slug}:viewer" in members
    with pytest.raises(CommandError, match="No tenant with slug 'ghost'"):
        run("users", "list", "--tenant", "ghost")


def test_users_deactivate_ends_every_session(user, no_input):
    first, second = new_session(user), new_session(user)
    out = run("users", "deactivate", user.email)
    assert out == f"User {user.email} deactivated; ended 2 session(s) (their sockets close with 4401).\n"
    user.refresh_from_db()
    assert not user.is_active
    for session in (first, second):
        row = RuntimeSession.objects.get(pk=session.pk)
        assert (row.status, row.end_reason, row.ended_by_type) == ("ended", "user_deactivated", "command")
    assert "was already inactive; ended 0 session(s)" in run("users", "deactivate", user.email)
    with pytest.raises(CommandError, match="No user with email 'ghost@example.com'"):
        run("users", "deactivate", "ghost@example.com")


# --- tenants activate -----------------------------------------------------------------
def test_activate_lets_a_suspended_tenants_members_log_in_again(user, tenant, no_input):
    session = new_session(user)
    run("tenants", "suspend", tenant.slug)
    assert run("tenants", "activate", tenant.slug.upper()) == f"Tenant {tenant.slug} activated.\n"
    assert Tenant.objects.get(pk=tenant.pk).status == TenantStatus.ACTIVE
    assert status_of(session) == SessionStatus.ENDED  # the suspension's ends stay ended
    new_session(user)  # and logging in works again
    audit = AuditEvent.objects.get(kind=AuditEvent.Kind.TENANT_ACTIVATED, tenant_id=tenant.pk)
    assert audit.actor_type == ActorType.COMMAND


def test_activate_an_active_tenant_changes_nothing(tenant):
    assert run("tenants", "activate", tenant.slug) == f"Tenant {tenant.slug} was already active.\n"
    assert run("tenants", "activate", tenant.slug, "-v", "0") == ""
    assert not AuditEvent.objects.filter(kind=AuditEvent.Kind.TENANT_ACTIVATED).exists()


def test_activate_an_unknown_tenant(db):
    with pytest.raises(CommandError, match="No tenant with slug 'nope'"):
        run("tenants", "activate", "nope")


# --- users create ---------------------------------------------------------------------
def test_create_generates_a_password_and_prints_it_once(db, tenant):
    out = run("users", "create", "New@Example.com", "--name", "  New Person ")
    lines = out.splitlines()
    assert lines[0].startswith("Created user new@example.com, id ") and "no tenant yet" in lines[0]
    password = lines[1].removeprefix("Password (shown once): ")
    assert len(lines) == 2 and len(password) >= 20
    user = User.objects.get(email="new@example.com")
    assert (user.name, user.is_active, user.is_staff, user.memberships.count()) == ("New Person", True, False, 0)
    assert user.check_password(password)
    audit = AuditEvent.objects.get(kind=AuditEvent.Kind.USER_CREATED, user_id=user.pk)
    assert audit.actor_type == ActorType.COMMAND and audit.data == {"staff": False}
    run("tenants", "add-member", tenant.slug, user.email, "--role", "member")
    assert auth_login(email=user.email, password=password, tenant_id=None).session


def test_create_reads_the_password_from_stdin(db, monkeypatch):
    monkeypatch.setattr("sys.stdin", StringIO("Tr0ub4dor-and-more\nignored\n"))
    out = run("users", "create", "ops@example.com", "--password-stdin", "--staff", "-v", "0")
    assert out == ""  # nothing to show: the operator chose the password
    user = User.objects.get(email="ops@example.com")
    assert user.is_staff and user.check_password("Tr0ub4dor-and-more")


@pytest.mark.parametrize(
    "args, stdin, message",
    [
        (["not-an-email"], "", "'not-an-email' is not an email address"),
        (["a@example.com", "--password-stdin"], "", "no password on stdin"),
        (["a@example.com", "--password-stdin"], "short\n", "Password rejected: This password is too short"),
        (["a@example.com", "--password-stdin"], "12345678901\n", "entirely numeric"),
        (["a@example.com", "--name", "x" * 151], "", "--name is limited to 150 characters"),
    ],
)
def test_create_bad_arguments(db, monkeypatch, args, stdin, message):
    monkeypatch.setattr("sys.stdin", StringIO(stdin))
    with pytest.raises(CommandError, match=message):
        run("users", "create", *args)
    assert not User.objects.filter(email="a@example.com").exists()


def test_create_an_existing_email(user):
    with pytest.raises(CommandError, match=f"A user with email '{user.email}' already exists"):
        run("users", "create", user.email.upper())


# --- runtime_sweep --------------------------------------------------------------------
def test_runtime_sweep_prunes_the_token_ledger_of_expired_tokens_only(user):
    from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

    new_session(user), new_session(user)
    live, old = OutstandingToken.objects.order_by("id")
    BlacklistedToken.objects.create(token=old)  # as a rotation leaves it
    OutstandingToken.objects.filter(pk=old.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    out = run("runtime_sweep")
    assert "refresh token ledger: removed 1 expired token(s) and their blacklist rows" in out
    assert list(OutstandingToken.objects.values_list("pk", flat=True)) == [live.pk]
    assert not BlacklistedToken.objects.exists()
    assert "removed 0 expired" in run("runtime_sweep")


# --- runtime_sweep --------------------------------------------------------------------
def test_runtime_sweep_removes_dead_records_fails_lost_executions_and_expires(user, settings):
    now = timezone.now()
    live, lost = new_session(user), new_session(user)
    ServerInstance.objects.create(pk="alive", last_heartbeat_at=now)
    ServerInstance.objects.create(pk="dead", last_heartbeat_at=now - timedelta(minutes=10))
    Connection.objects.create(session=live, user=user, channel_name="on-alive", server_instance="alive")
    Connection.objects.create(session=live, user=user, channel_name="on-dead", server_instance="dead")
    Connection.objects.create(session=live, user=user, channel_name="on-unknown", server_instance="never-heard-of")
    intent = Intent.objects.create(session=live, user=user, tenant=live.tenant, intent_type="echo")
    stuck = Execution.objects.create(
        intent=intent, session=live, user=user, tenant=live.tenant, intent_type="echo",
        status=ExecutionStatus.RUNNING, attempts=settings.SYMPHAINY.get("EXECUTION_MAX_ATTEMPTS", 3),
        heartbeat_at=now - timedelta(hours=1),
    )
    make_past_idle(lost)

    out = run("runtime_sweep")
    assert out.splitlines() == [
        "connections: removed 2 record(s) of dead server processes",
        "executions: requeued 0, failed 1, redispatched 0",
        "agent answers: failed 0 as interrupted (their process stopped)",
        "sessions: expired 1",
        "idempotency records: removed 0 past their retention",
        "refresh token ledger: removed 0 expired token(s) and their blacklist rows",
        "session events: removed 0 past their retention",
    ]
    assert list(Connection.objects.values_list("channel_name", flat=True)) == ["on-alive"]
    assert Execution.objects.get(pk=stuck.pk).status == ExecutionStatus.FAILED
    assert status_of(lost) == SessionStatus.EXPIRED and status_of(live) == SessionStatus.ACTIVE
    assert run("runtime_sweep").splitlines()[0] == "connections: removed 0 record(s) of dead server processes"
    assert run("runtime_sweep", verbosity=0) == ""


def test_runtime_sweep_bad_wait(db):
    with pytest.raises(CommandError, match="--wait must be zero or more seconds."):
        run("runtime_sweep", "--wait", "-1")
    with pytest.raises(CommandError, match="argument --wait: invalid float value"):
        run("runtime_sweep", "--wait", "soon")


# --- Sockets close ----------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
async def test_users_deactivate_closes_a_live_socket_with_4401():
    from tests.realtime.test_consumer import login_new_user, open_ready

    user, body = await login_new_user()
    sock, _ = await open_ready(body["access_token"])
    out = StringIO()
    await database_sync_to_async(call_command)("users", "deactivate", user.email, stdout=out)
    assert "ended 1 session(s)" in out.getvalue()
    assert await sock.receive_close(timeout=2) == 4401


@pytest.mark.django_db(transaction=True)
async def test_sessions_end_closes_a_live_socket_with_4409(monkeypatch):
    from tests.realtime.test_consumer import login_new_user, open_ready

    _, body = await login_new_user()
    sock, _ = await open_ready(body["access_token"])
    monkeypatch.setattr("builtins.input", lambda prompt="": "yes")
    await database_sync_to_async(call_command)("sessions", "end", body["session_id"], stdout=StringIO())
    assert await sock.receive_close(timeout=2) == 4409
