"""core.E013: deploy/symphainy.env.example copied and not edited (its SECRET_KEY is 32 bytes
and passed every other check) is refused at start, each placeholder by name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import override_settings

from core.checks import DEVELOPMENT_SECRET_KEY, placeholder_values_check

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "symphainy.env.example"


def example_env() -> dict[str, str]:
    lines = [line.strip() for line in EXAMPLE.read_text().splitlines()]
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def _run(args: list[str], tmp_path: Path, env_file: dict[str, str]) -> subprocess.CompletedProcess:
    keep = {k: v for k, v in os.environ.items()
            if k not in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "DEBUG", "SYMPHAINY_INSECURE_DEV_KEY", "SYMPHAINY_REQUIRE_SERVICES")}
    env = {**keep, "SQLITE_PATH": str(tmp_path / "checks.sqlite3"), **env_file}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_the_example_env_file_as_copied_is_refused_naming_each_placeholder(tmp_path):
    example = example_env()
    assert example["SECRET_KEY"] == "change-me-to-a-long-random-value"
    result = _run(["manage.py", "check"], tmp_path, example)
    assert result.returncode == 1, result.stdout + result.stderr
    refused = [line for line in result.stderr.splitlines() if "(core.E013)" in line]
    assert sorted(line.split("(core.E013) ")[1].split(" ")[0] for line in refused) == [
        "ALLOWED_HOSTS", "DATABASE_URL", "SECRET_KEY"], result.stderr
    assert "core.E001" not in result.stderr and "core.E002" not in result.stderr  # the other checks let it through

    # Edited as docs/deployment.md says: accepted.
    edited = {name: value.replace("change-me-to-a-long-random-value", "k3Q" * 20).replace("change-me-database-password", "pw1")
              .replace("change-me.example.com", "gateway.example.com") for name, value in example.items()}
    result = _run(["manage.py", "check"], tmp_path, edited)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("module", ["symphainy.wsgi", "symphainy.asgi"])
def test_a_server_refuses_to_start_on_the_example_key(tmp_path, module):
    result = _run(["-c", f"import {module}"], tmp_path, {"SECRET_KEY": example_env()["SECRET_KEY"]})
    assert result.returncode != 0
    assert "Refusing to start" in result.stderr and "core.E013: SECRET_KEY still holds a placeholder" in result.stderr


def test_in_process_debug_does_not_excuse_a_placeholder_and_the_development_key_is_e001s(settings):
    with override_settings(DEBUG=True, SECRET_KEY="Change-Me-please-" + "x" * 20):
        assert [(e.id, e.msg.split()[0]) for e in placeholder_values_check()] == [("core.E013", "SECRET_KEY")]
    with override_settings(DEBUG=False, SECRET_KEY=DEVELOPMENT_SECRET_KEY,
                           SIMPLE_JWT={**settings.SIMPLE_JWT, "SIGNING_KEY": DEVELOPMENT_SECRET_KEY}):
        assert placeholder_values_check() == []
    with override_settings(SIMPLE_JWT={**settings.SIMPLE_JWT, "SIGNING_KEY": "change-me-" + "j" * 30}):
        assert [e.msg.split()[0] for e in placeholder_values_check()] == ["JWT_SIGNING_KEY"]
