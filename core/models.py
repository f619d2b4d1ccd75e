"""The audit trail: who did what to identities and sessions. Its writers are in every app,
so it lives on the ground floor."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class ActorType(models.TextChoices):
    USER = "user", "User"
    ADMIN = "admin", "Admin"
    COMMAND = "command", "Management command"
    SYSTEM = "system", "System"


class AuditEvent(models.Model):
    """An append-only record of who did what to identities and sessions."""

    class Kind(models.TextChoices):
        LOGIN_SUCCEEDED = "login.succeeded"
        LOGIN_FAILED = "login.failed"
        USER_REGISTERED = "user.registered"
        USER_CREATED = "user.created"
        USER_DEACTIVATED = "user.deactivated"
        TENANT_CREATED = "tenant.created"
        TENANT_SUSPENDED = "tenant.suspended"
        TENANT_ACTIVATED = "tenant.activated"
        USER_ACTIVATED = "user.activated"
        PASSWORD_CHANGED = "user.password_changed"
        MEMBERSHIP_CHANGED = "membership.changed"
        MEMBERSHIP_REMOVED = "membership.removed"
        SESSION_CREATED = "session.created"
        SESSION_ENDED = "session.ended"
        REFRESH_TOKEN_REUSED = "token.refresh_reused"
        SOCKET_REFUSED = "socket.refused"
        SOCKET_DISCONNECTED = "socket.disconnected"
        INTENT_RECEIVED = "intent.received"
        EXECUTION_FINISHED = "execution.finished"

    id = models.BigAutoField(primary_key=True)
    at = models.DateTimeField(default=timezone.now, db_index=True)
    kind = models.CharField(max_length=48, choices=Kind.choices, db_index=True)
    actor_type = models.CharField(max_length=16, choices=ActorType.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    tenant = models.ForeignKey("accounts.Tenant", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    # Not a foreign key: the trail outlives the session rows it speaks of.
    session_id = models.UUIDField(null=True, blank=True, db_index=True)
    client_address = models.GenericIPAddressField(null=True, blank=True)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        # The table keeps the name it had when the trail lived in sessions_runtime.
        db_table = "sessions_runtime_auditevent"
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.kind}"


# --- The session event log (docs/architecture.md#the-session-event-log) ------------------
# Written by `core.events`, read by each serving process's tail and by a resuming socket.
# Neither table has a foreign key to the session: the log is on the ground floor, and a
# row outlives nothing it needs.
class EventLog(models.Model):
    """One row: the log's epoch. A new epoch (the row recreated, as after a flush or a
    restore into an empty database) tells a resuming client its positions mean nothing."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    epoch = models.CharField(max_length=32)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"event log {self.epoch}"


class SessionEventSequence(models.Model):
    """Where one session's log stands: the last position given out. Taking a position
    locks this row until the transaction ends, so a session's events commit in the order
    of their positions and a replay `seq > since` can never skip one committed late."""

    session_id = models.UUIDField(primary_key=True)
    last_seq = models.BigIntegerField(default=0)
    # Set with the session's end: its events are pruned once past the retention time.
    ended_at = models.DateTimeField(null=True, blank=True, db_index=True)


class SessionEvent(models.Model):
    """One event of a session, at position `seq` within it (1, 2, 3, ...)."""

    id = models.BigAutoField(primary_key=True)
    session_id = models.UUIDField()
    seq = models.BigIntegerField()
    kind = models.CharField(max_length=64)
    data = models.JSONField(default=dict)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["session_id", "seq"], name="session_event_position")]
        indexes = [models.Index(fields=["at"], name="session_event_at")]

    def __str__(self) -> str:
        return f"{self.session_id}#{self.seq} {self.kind}"
