"""Live sockets, so that operators and the session API can see who is connected."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class Connection(models.Model):
    """One open WebSocket. Removed on disconnect; rows of a dead server are swept."""

    id = models.BigAutoField(primary_key=True)
    session = models.ForeignKey("sessions_runtime.RuntimeSession", on_delete=models.CASCADE, related_name="connections")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    channel_name = models.CharField(max_length=200, unique=True)
    server_instance = models.CharField(max_length=120, db_index=True)
    opened_at = models.DateTimeField(default=timezone.now)
    client_address = models.CharField(max_length=64, blank=True)
    user_agent = models.CharField(max_length=256, blank=True)

    class Meta:
        ordering = ["-opened_at"]
        indexes = [models.Index(fields=["user", "opened_at"], name="connection_user")]
        # Closing a socket is a change, not a "view": the admin's action asks for this.
        permissions = [("disconnect_connection", "Can disconnect live sockets")]

    def __str__(self) -> str:
        return f"socket {self.pk} on {self.server_instance}"


class ServerInstance(models.Model):
    """A serving process, with a heartbeat: connections of an instance whose heartbeat
    stopped belong to a dead process and are swept."""

    id = models.CharField(primary_key=True, max_length=120)
    started_at = models.DateTimeField(default=timezone.now)
    last_heartbeat_at = models.DateTimeField(default=timezone.now, db_index=True)

    def __str__(self) -> str:
        return self.id
