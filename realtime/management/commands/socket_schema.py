"""`manage.py socket_schema`: print the socket's AsyncAPI document (as /asyncapi.json
serves it); with `--write`, write it and /openapi.json's document to the TypeScript
client's committed copies (clients/js/schema/), which tests/realtime/test_asyncapi.py
keeps equal to what the server generates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from realtime.asyncapi import asyncapi_json, openapi_document

SCHEMA_DIR = Path("clients") / "js" / "schema"


def openapi_json() -> str:
    """/openapi.json's document as committed: sorted as generated, two-space indented."""
    return json.dumps(openapi_document(), indent=2, ensure_ascii=False) + "\n"


def committed_copies() -> dict[Path, str]:
    """Each committed copy's path and what it should hold now."""
    root = Path(settings.BASE_DIR) / SCHEMA_DIR
    return {root / "asyncapi.json": asyncapi_json(), root / "openapi.json": openapi_json()}


class Command(BaseCommand):
    help = ("Print the AsyncAPI 3.0 document of the socket /api/runtime/agent (served at /asyncapi.json). "
            "--write: write it and the OpenAPI document to clients/js/schema/.")
    # It only renders documents: it runs on a checkout without a production configuration.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--write", action="store_true", help="Write clients/js/schema/{asyncapi,openapi}.json.")

    def handle(self, *args: Any, write: bool = False, **options: Any) -> None:
        if not write:
            self.stdout.write(asyncapi_json(), ending="")
            return
        for path, text in committed_copies().items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            self.stdout.write(f"wrote {path.relative_to(settings.BASE_DIR)}")
