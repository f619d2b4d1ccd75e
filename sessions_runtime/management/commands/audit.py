"""The audit trail's retention: `manage.py audit prune`."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from core.audit import audit_events_prune
from core.conf import runtime_settings
from core.models import AuditEvent


class Command(BaseCommand):
    help = "Audit trail maintenance. `prune` deletes rows older than the retention (AUDIT_RETENTION_SECONDS)."

    def add_arguments(self, parser: Any) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        prune = actions.add_parser("prune", help="Delete audit rows older than the retention.")
        prune.add_argument("--days", type=int, default=None, help="Keep this many days instead of the setting.")
        prune.add_argument("--dry-run", action="store_true", help="Count what would go; delete nothing.")

    def handle(self, *args: Any, **options: Any) -> None:
        days = options["days"]
        if days is not None and days < 0:
            raise CommandError("--days must be zero or more.")
        keep = timedelta(days=days) if days is not None else runtime_settings.AUDIT_RETENTION
        if options["dry_run"]:
            count = AuditEvent.objects.filter(at__lt=timezone.now() - keep).count()
            self.stdout.write(f"Would delete {count} audit events older than {keep.days} days.")
            return
        deleted = audit_events_prune(older_than=keep)
        self.stdout.write(f"Deleted {deleted} audit events older than {keep.days} days.")
