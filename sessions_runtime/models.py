"""Runtime sessions, their state, intents, executions and files. The database is the
sessions' source of truth."""

from __future__ import annotations

import uuid
from datetime import datetime

from django.conf import settings
from django.db import models
from django.utils import timezone

from core.models import ActorType


class SessionStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    ENDED = "ended", "Ended"
    EXPIRED = "expired", "Expired"


class EndReason(models.TextChoices):
    LOGOUT = "logout", "Logged out"
    LOGOUT_ALL = "logout_all", "Logged out everywhere"
    DELETED = "deleted", "Ended through the API"
    SUPERSEDED = "superseded", "Over the active-session cap"
    EXPIRED_IDLE = "expired_idle", "Idle timeout"
    EXPIRED_ABSOLUTE = "expired_absolute", "Absolute lifetime reached"
    TOKEN_REUSE = "refresh_token_reuse", "A used refresh token was presented again"
    # By someone other than its owner (the admin, a command, a tenant admin through the
    # API): who it was is `ended_by_type`, not this reason.
    ADMIN = "admin", "Ended by an operator"
    USER_DEACTIVATED = "user_deactivated", "User deactivated"
    MEMBERSHIP_REMOVED = "membership_removed", "Membership removed"
    TENANT_SUSPENDED = "tenant_suspended", "Tenant suspended"
    PASSWORD_CHANGED = "password_changed", "Password changed"


EXPIRY_REASONS = frozenset({EndReason.EXPIRED_IDLE, EndReason.EXPIRED_ABSOLUTE})


def expiry_reason(*, expires_at: datetime, idle_expires_at: datetime, now: datetime | None = None) -> str | None:
    """The expiry rule in Python, for a session row or a snapshot of one: absolute first,
    then idle (`_past_expiry` is the same rule in SQL)."""
    now = now or timezone.now()
    if now >= expires_at:
        return EndReason.EXPIRED_ABSOLUTE
    if now >= idle_expires_at:
        return EndReason.EXPIRED_IDLE
    return None


def _past_expiry(now: datetime, reason: str | None = None) -> models.Q:
    """The expiry rule in SQL (`RuntimeSession.expiry_reason` is the same rule in Python):
    absolute first, then idle."""
    absolute = models.Q(expires_at__lte=now)
    idle = models.Q(idle_expires_at__lte=now, expires_at__gt=now)
    return {EndReason.EXPIRED_ABSOLUTE: absolute, EndReason.EXPIRED_IDLE: idle, None: absolute | idle}[reason]


class RuntimeSessionQuerySet(models.QuerySet):
    def past_expiry(self, *, reason: str | None = None, now: datetime | None = None) -> "RuntimeSessionQuerySet":
        """Active sessions past an expiry (or past this one), not yet written down as expired."""
        return self.filter(_past_expiry(now or timezone.now(), reason), status=SessionStatus.ACTIVE)

    def with_status(self, status: str, *, now: datetime | None = None) -> "RuntimeSessionQuerySet":
        """By the status clients see: an active session past an expiry counts as expired."""
        now = now or timezone.now()
        if status == SessionStatus.ACTIVE:
            return self.filter(status=SessionStatus.ACTIVE).exclude(_past_expiry(now))
        if status == SessionStatus.EXPIRED:
            return self.filter(models.Q(status=SessionStatus.EXPIRED) | models.Q(_past_expiry(now), status=SessionStatus.ACTIVE))
        return self.filter(status=status)

    def usable(self, *, now: datetime | None = None) -> "RuntimeSessionQuerySet":
        return self.with_status(SessionStatus.ACTIVE, now=now)


class RuntimeSession(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="runtime_sessions")
    tenant = models.ForeignKey("accounts.Tenant", on_delete=models.CASCADE, related_name="runtime_sessions")
    status = models.CharField(max_length=16, choices=SessionStatus.choices, default=SessionStatus.ACTIVE)
    created_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    idle_expires_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=32, choices=EndReason.choices, blank=True)
    ended_by_type = models.CharField(max_length=16, choices=ActorType.choices, blank=True)
    ended_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    metadata = models.JSONField(default=dict, blank=True)
    # The validated session intent's execution contract, kept for inspection.
    intent = models.JSONField(default=dict, blank=True)

    objects = RuntimeSessionQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        # Ending a session is a change with consequences (tokens die, sockets close):
        # the admin asks for this permission, not for "view".
        permissions = [("end_runtimesession", "Can end runtime sessions")]
        indexes = [
            models.Index(fields=["user", "status", "created_at"], name="session_user_status"),
            models.Index(fields=["tenant", "status", "created_at"], name="session_tenant_status"),
            models.Index(fields=["status", "idle_expires_at"], name="session_status_idle"),
            models.Index(fields=["status", "expires_at"], name="session_status_expires"),
        ]

    def __str__(self) -> str:
        return f"{self.id} ({self.status})"

    def expiry_reason(self, now: datetime | None = None) -> str | None:
        """Which expiry has passed, if any (see `_past_expiry`)."""
        return expiry_reason(expires_at=self.expires_at, idle_expires_at=self.idle_expires_at, now=now)

    def effective_status(self, now: datetime | None = None) -> str:
        """The status as clients see it: an active session past an expiry is `expired`
        even before any sweep has written that down."""
        if self.status == SessionStatus.ACTIVE and self.expiry_reason(now):
            return SessionStatus.EXPIRED
        return self.status

    def ended_shown(self) -> str:
        """'admin, by command': why it ended and which kind of actor ended it ('-' while active)."""
        if not self.end_reason:
            return "-"
        return f"{self.end_reason}, by {self.ended_by_type}" if self.ended_by_type else self.end_reason

    def is_usable(self, now: datetime | None = None) -> bool:
        return self.effective_status(now) == SessionStatus.ACTIVE


class SessionState(models.Model):
    """A versioned JSON document of the database state backend, one per key."""

    key = models.CharField(max_length=200, unique=True)
    tenant = models.ForeignKey("accounts.Tenant", on_delete=models.CASCADE, related_name="+")
    session = models.ForeignKey(RuntimeSession, on_delete=models.CASCADE, related_name="states")
    version = models.PositiveIntegerField(default=0)
    data = models.JSONField(default=dict)
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.key} v{self.version}"


class Intent(models.Model):
    """What a client asked the runtime to do, as received."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    session = models.ForeignKey(RuntimeSession, on_delete=models.CASCADE, related_name="intents")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    tenant = models.ForeignKey("accounts.Tenant", on_delete=models.CASCADE, related_name="+")
    intent_type = models.CharField(max_length=64)
    parameters = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.intent_type} {self.id}"


class ExecutionStatus(models.TextChoices):
    CREATED = "created", "Created"
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


FINISHED_STATUSES = frozenset({ExecutionStatus.COMPLETED, ExecutionStatus.FAILED, ExecutionStatus.CANCELLED})


def empty_progress() -> dict:
    return {"total": 0, "processed": 0, "succeeded": 0, "failed": 0}


class Execution(models.Model):
    """One run of an intent's handler, with its progress and outcome."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    intent = models.OneToOneField(Intent, on_delete=models.CASCADE, related_name="execution")
    session = models.ForeignKey(RuntimeSession, on_delete=models.CASCADE, related_name="executions")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    tenant = models.ForeignKey("accounts.Tenant", on_delete=models.CASCADE, related_name="+")
    intent_type = models.CharField(max_length=64, db_index=True)
    status = models.CharField(max_length=16, choices=ExecutionStatus.choices, default=ExecutionStatus.CREATED)
    progress = models.JSONField(default=empty_progress)
    result = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)
    attempts = models.PositiveSmallIntegerField(default=0)
    worker = models.CharField(max_length=120, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        permissions = [("cancel_execution", "Can cancel executions")]
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["status", "heartbeat_at"], name="execution_status_heartbeat"),
            models.Index(fields=["session", "created_at"], name="execution_session"),
        ]

    def __str__(self) -> str:
        return f"{self.intent_type} {self.id} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_STATUSES


class IdempotencyRecord(models.Model):
    """The first answer to an intent submission with a given key, per tenant and user."""

    tenant = models.ForeignKey("accounts.Tenant", on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    execution = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="+")
    response = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "user", "key"], name="idempotency_unique_key"),
        ]

    def __str__(self) -> str:
        return self.key


class FileReference(models.Model):
    """Metadata of a file used in a session; the bytes live elsewhere (`location`)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    session = models.ForeignKey(RuntimeSession, on_delete=models.CASCADE, related_name="files")
    tenant = models.ForeignKey("accounts.Tenant", on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=255)
    size = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    content_type = models.CharField(max_length=127)
    location = models.CharField(max_length=1024)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name


class AgentAnswer(models.Model):
    """An agent answer in flight, where every server process can read it: the text so far
    (written in coalesced steps by the process that runs it, `server_instance`), the index
    of the next token, and the lease that process renews. The row goes with the answer's
    one terminal event, in the same transaction: a row is an answer not yet ended."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)  # the message_id
    session = models.ForeignKey(RuntimeSession, on_delete=models.CASCADE, related_name="agent_answers")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    tenant = models.ForeignKey("accounts.Tenant", on_delete=models.CASCADE, related_name="+")
    conversation_id = models.CharField(max_length=64)
    question = models.TextField()
    text = models.TextField(blank=True, default="")
    next_index = models.PositiveIntegerField(default=0)
    # Counts the running process's writes: a reader that saw write n knows write n + 2
    # began after it read (see realtime/catchup.py).
    writes = models.PositiveIntegerField(default=0)
    server_instance = models.CharField(max_length=120)
    lease_expires_at = models.DateTimeField()
    cancel_requested = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at"]
        indexes = [
            models.Index(fields=["lease_expires_at"], name="agent_answer_lease"),
            models.Index(fields=["user", "created_at"], name="agent_answer_user"),
            models.Index(fields=["session", "created_at"], name="agent_answer_session"),
        ]

    def __str__(self) -> str:
        return f"answer {self.id} ({self.next_index} tokens)"
