"""Operator commands for runtime sessions: `manage.py sessions list|show|end|expire`.

Reads query the models; every change goes through `sessions_runtime.services`, with the
actor `command` in the audit trail, so that sockets close exactly as for any other end.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Count, QuerySet
from django.utils import timezone

from accounts.models import Tenant, User, normalize_email
from core.caller import Caller
from core.commands import common_options, confirm, lookup, positive_int, table, uuid_arg, when
from realtime.models import Connection
from sessions_runtime.models import EndReason, Execution, RuntimeSession, SessionStatus
from sessions_runtime.services import END_NOTE_MAX_LENGTH, session_end, sessions_end, sessions_expire_due
from sessions_runtime.state_writes import session_state_read

RECENT_EXECUTIONS = 10


def _user_by_email(email: str) -> User:
    return lookup(User.objects.filter(email=normalize_email(email)), f"No user with email '{email}'.")


def _tenant_by_slug(slug: str) -> Tenant:
    return lookup(Tenant.objects.filter(slug=slug.strip().lower()), f"No tenant with slug '{slug}'.")


def _session_by_id(raw: str) -> RuntimeSession:
    return lookup(
        RuntimeSession.objects.select_related("user", "tenant").filter(pk=uuid_arg(raw)),
        f"No session with id {raw.strip()}.",
    )


def _sessions(queryset: QuerySet[RuntimeSession]) -> QuerySet[RuntimeSession]:
    return queryset.select_related("user", "tenant").order_by("-created_at", "-id")


def _with_sockets(queryset: QuerySet[RuntimeSession]) -> QuerySet[RuntimeSession]:
    """Each session with its live sockets counted (`socket_count`), in the same query."""
    return queryset.annotate(socket_count=Count("connections"))


def _expires(session: RuntimeSession) -> Any:
    """When an active session stops being usable: the sooner of its two expiries."""
    return min(session.expires_at, session.idle_expires_at)


def _end_reason(session: RuntimeSession) -> str:
    if session.end_reason:
        return session.end_reason
    if session.effective_status() == SessionStatus.EXPIRED:
        return session.expiry_reason() or ""
    return ""


def _ended(session: RuntimeSession) -> str:
    """'admin, by command' once ended (why, and which kind of actor); an expiry not yet
    written down by a sweep shows its reason alone."""
    return session.ended_shown() if session.end_reason else _end_reason(session)


def _as_json(session: RuntimeSession) -> dict[str, Any]:
    def iso(value: Any) -> str | None:
        return value.isoformat() if value else None

    return {
        "session_id": str(session.pk),
        "user_id": str(session.user_id),
        "user_email": session.user.email,
        "tenant_id": str(session.tenant_id),
        "tenant_slug": session.tenant.slug,
        "status": session.effective_status(),
        "created_at": iso(session.created_at),
        "last_seen_at": iso(session.last_seen_at),
        "expires_at": iso(session.expires_at),
        "idle_expires_at": iso(session.idle_expires_at),
        "ended_at": iso(session.ended_at),
        "end_reason": _end_reason(session) or None,
        "ended_by": session.ended_by_type or None,
        "sockets": getattr(session, "socket_count", None),
    }


class Command(BaseCommand):
    help = (
        "Runtime sessions: list, show, end (by id, user or tenant) and expire. Ending goes "
        "through the session service, so sockets close and the audit trail names the command."
    )

    def add_arguments(self, parser: Any) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="{list,show,end,expire}")

        listing = actions.add_parser(
            "list",
            help="List sessions, newest first.",
            description="List sessions, newest first. 'expires' is the sooner of the idle and absolute expiry; "
            "times are UTC.",
        )
        listing.add_argument("--user", metavar="EMAIL", help="Only this user's sessions.")
        listing.add_argument("--tenant", metavar="SLUG", help="Only this tenant's sessions.")
        listing.add_argument(
            "--status",
            choices=SessionStatus.values,
            help="Only sessions with this status, as clients see it (an active session past an expiry is expired).",
        )
        listing.add_argument("--limit", type=positive_int, default=50, metavar="N", help="At most N rows (default 50).")
        listing.add_argument("--json", action="store_true", help="One JSON object per line instead of a table.")

        show = actions.add_parser(
            "show", help="Show one session.",
            description="Show one session: its fields, its live sockets (process, since, client address, user "
            "agent), state version and recent executions.",
        )
        show.add_argument("session_id", metavar="ID", help="The session's id (a UUID).")

        end = actions.add_parser(
            "end",
            help="End sessions by id, or every active session of a user and/or tenant.",
            description="End sessions by id, or every active session of a user and/or tenant (both given: "
            "that user's sessions in that tenant). Their sockets close with 4409. Asks first unless --yes.",
        )
        end.add_argument("session_ids", nargs="*", metavar="ID", help="Session ids (UUIDs).")
        end.add_argument("--user", metavar="EMAIL", help="End this user's active sessions.")
        end.add_argument("--tenant", metavar="SLUG", help="End this tenant's active sessions.")
        end.add_argument(
            "--reason", default="", metavar="TEXT",
            help=f"A note for the audit trail (at most {END_NOTE_MAX_LENGTH} characters); the end reason is 'admin'.",
        )
        end.add_argument("--yes", action="store_true", help="Do not ask for confirmation.")

        expire = actions.add_parser(
            "expire",
            help="Expire every active session past its idle or absolute expiry (safe from cron).",
            description="Mark every active session past its idle or absolute expiry as expired and close its "
            "sockets. Never asks; exits 0 when there is nothing to do. Use -v 0 to print nothing.",
        )
        expire.add_argument("--dry-run", action="store_true", help="Only list what would expire; change nothing.")
        common_options(parser, actions)

    def handle(self, *args: Any, **options: Any) -> None:
        {"list": self._list, "show": self._show, "end": self._end, "expire": self._expire}[options["action"]](options)

    # --- list ---------------------------------------------------------------------------
    def _list(self, options: dict[str, Any]) -> None:
        sessions = RuntimeSession.objects.all()
        if options["user"]:
            sessions = sessions.filter(user=_user_by_email(options["user"]))
        if options["tenant"]:
            sessions = sessions.filter(tenant=_tenant_by_slug(options["tenant"]))
        if options["status"]:
            if options["status"] not in SessionStatus.values:
                raise CommandError(f"Unknown status '{options['status']}'; use one of {', '.join(SessionStatus.values)}.")
            sessions = sessions.with_status(options["status"])
        limit = options["limit"]
        if not isinstance(limit, int) or limit < 1:
            raise CommandError("--limit must be a whole number of at least 1.")
        rows = list(_with_sockets(_sessions(sessions))[:limit])
        if options["json"]:
            for session in rows:
                self.stdout.write(json.dumps(_as_json(session)))
            return
        if not rows:
            self.stdout.write("No sessions.")
            return
        self.stdout.write(
            table(
                ["id", "user", "tenant", "status", "created", "last seen", "expires", "sockets", "ended (reason, by)"],
                (
                    [
                        s.pk, s.user.email, s.tenant.slug, s.effective_status(), when(s.created_at),
                        when(s.last_seen_at), when(_expires(s)), s.socket_count, _ended(s),
                    ]
                    for s in rows
                ),
            )
        )

    # --- show ---------------------------------------------------------------------------
    def _show(self, options: dict[str, Any]) -> None:
        session = _session_by_id(options["session_id"])
        status = session.effective_status()
        if status != session.status:
            status = f"{status} (recorded as {session.status} until the next expiry sweep)"
        ended_by = session.ended_by_type
        if ended_by and session.ended_by_id:
            ended_by = f"{ended_by} ({session.ended_by})"
        fields = [
            ("session", session.pk),
            ("user", f"{session.user.email} ({session.user_id})"),
            ("tenant", f"{session.tenant.slug} ({session.tenant_id})"),
            ("status", status),
            ("created", when(session.created_at)),
            ("last seen", when(session.last_seen_at)),
            ("idle expiry", when(session.idle_expires_at)),
            ("expires", when(session.expires_at)),
            ("ended", when(session.ended_at)),
            ("end reason", _end_reason(session) or "-"),
            ("ended by", ended_by or "-"),
            ("state version", session_state_read(session=session).version),
            ("metadata", json.dumps(session.metadata, sort_keys=True)),
        ]
        width = max(len(name) for name, _ in fields)
        for name, value in fields:
            self.stdout.write(f"{name.ljust(width)}  {value}")
        # The session's live sockets, by their connection id (what `sockets disconnect`
        # takes): the process holding each, since when, from where, with which client.
        sockets = list(Connection.objects.filter(session_id=session.pk).order_by("opened_at", "id"))
        self._section("sockets", width, f"Sockets ({len(sockets)}, oldest first)",
                      ["connection", "process", "since", "client address", "user agent"],
                      [[c.pk, c.server_instance, when(c.opened_at), c.client_address, c.user_agent] for c in sockets])
        executions = list(Execution.objects.filter(session_id=session.pk).order_by("-created_at")[:RECENT_EXECUTIONS])
        self._section("executions", width, f"Recent executions (newest first, at most {RECENT_EXECUTIONS})",
                      ["id", "intent type", "status", "created", "finished"],
                      [[e.pk, e.intent_type, e.status, when(e.created_at), when(e.finished_at)] for e in executions])

    def _section(self, label: str, width: int, title: str, headers: list[str], rows: list[list]) -> None:
        """A table under its title, or the label and "none"."""
        if not rows:
            self.stdout.write(label.ljust(width) + "  none")
            return
        self.stdout.write(f"\n{title}:")
        self.stdout.write(table(headers, rows))

    # --- end ----------------------------------------------------------------------------
    def _end(self, options: dict[str, Any]) -> None:
        raw_ids: list[str] = options["session_ids"] or []
        note = options["reason"].strip()
        if len(note) > END_NOTE_MAX_LENGTH:
            raise CommandError(f"--reason is limited to {END_NOTE_MAX_LENGTH} characters.")
        if raw_ids and (options["user"] or options["tenant"]):
            raise CommandError("Give session ids, or --user/--tenant, not both.")
        if raw_ids:
            self._end_by_id(raw_ids, note=note, assume_yes=options["yes"])
        elif options["user"] or options["tenant"]:
            self._end_by_owner(options["user"], options["tenant"], note=note, assume_yes=options["yes"])
        else:
            raise CommandError("Nothing to end: give session ids, --user EMAIL or --tenant SLUG.")

    def _end_by_id(self, raw_ids: list[str], *, note: str, assume_yes: bool) -> None:
        ids = list(dict.fromkeys(uuid_arg(raw) for raw in raw_ids))
        found = {s.pk: s for s in _sessions(RuntimeSession.objects.filter(pk__in=ids))}
        missing = [str(i) for i in ids if i not in found]
        if missing:
            raise CommandError(f"No session with id {', '.join(missing)}; nothing was ended.")
        active = [found[i] for i in ids if found[i].status == SessionStatus.ACTIVE]
        for session_id in ids:
            session = found[session_id]
            if session.status != SessionStatus.ACTIVE:
                self.stdout.write(f"Session {session_id} is already {session.status} ({session.end_reason or '-'}).")
        if not active:
            return
        self._list_targets(active)
        if not confirm(f"End {len(active)} session(s)?", assume_yes=assume_yes):
            self.stdout.write("Nothing ended.")
            return
        actor = Caller.command()
        for session in active:
            if session_end(session_id=session.pk, reason=EndReason.ADMIN, caller=actor, note=note):
                self.stdout.write(f"Ended session {session.pk}.")
            else:
                self.stdout.write(f"Session {session.pk} had already ended.")

    def _end_by_owner(self, email: str | None, slug: str | None, *, note: str, assume_yes: bool) -> None:
        sessions = RuntimeSession.objects.filter(status=SessionStatus.ACTIVE)
        whose = []
        if email:
            user = _user_by_email(email)
            sessions = sessions.filter(user=user)
            whose.append(f"user {user.email}")
        if slug:
            tenant = _tenant_by_slug(slug)
            sessions = sessions.filter(tenant=tenant)
            whose.append(f"tenant {tenant.slug}")
        targets = list(_sessions(sessions))
        if not targets:
            self.stdout.write(f"No active sessions for {' in '.join(whose)}.")
            return
        self._list_targets(targets)
        if not confirm(f"End {len(targets)} session(s) of {' in '.join(whose)}?", assume_yes=assume_yes):
            self.stdout.write("Nothing ended.")
            return
        ended = sessions_end(sessions=sessions, reason=EndReason.ADMIN, caller=Caller.command(), note=note)
        self.stdout.write(f"Ended {ended} session(s) of {' in '.join(whose)}.")

    def _list_targets(self, sessions: list[RuntimeSession]) -> None:
        self.stdout.write(
            table(
                ["id", "user", "tenant", "created", "last seen"],
                ([s.pk, s.user.email, s.tenant.slug, when(s.created_at), when(s.last_seen_at)] for s in sessions),
            )
        )

    # --- expire -------------------------------------------------------------------------
    def _expire(self, options: dict[str, Any]) -> None:
        now = timezone.now()
        due = list(_sessions(RuntimeSession.objects.past_expiry(now=now)))
        verbose = options["verbosity"] >= 1
        if options["dry_run"]:
            if verbose:
                for session in due:
                    self.stdout.write(f"would expire {session.pk} ({session.expiry_reason(now)})")
                self.stdout.write(f"Would expire {len(due)} session(s); nothing changed.")
            return
        expired = sessions_expire_due(now=now)
        if verbose:
            for session in due:
                self.stdout.write(f"expired {session.pk} ({session.expiry_reason(now)})")
            self.stdout.write(f"Expired {expired} session(s).")
