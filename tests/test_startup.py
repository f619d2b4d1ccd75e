"""Fail closed: with DEBUG off the service refuses to start on the public development
SECRET_KEY or a short JWT key, whichever documented command starts it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from core.checks import DEVELOPMENT_SECRET_KEY, signing_keys_check, startup_checks_enforce
from tests.live import free_port

ROOT = Path(__file__).resolve().parent.parent
REAL_KEY = "a-real-secret-key-" + "0123456789abcdef" * 3


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "JWT_SIGNING_KEY", "DEBUG", "SYMPHAINY_INSECURE_DEV_KEY"}}
    return {**env, "DEBUG": "0", **extra}


COMMANDS = {
    "check": lambda port: [sys.executable, "manage.py", "check"],
    "runserver": lambda port: [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
    "serve": lambda port: [sys.executable, "-m", "symphainy.serve", "-b", "127.0.0.1", "-p", str(port)],
    "daphne": lambda port: [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "symphainy.asgi:application"],
}


def _start(command: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    # A refused start exits by itself; the timeout only bounds a server that did start.
    return subprocess.run(COMMANDS[command](free_port()), cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_refuses_the_development_key_with_debug_off(command):
    result = _start(command, _env())
    assert result.returncode != 0
    assert "core.E001" in result.stdout + result.stderr


@pytest.mark.parametrize("command", ["check", "daphne"])
def test_a_short_jwt_signing_key_is_refused(command):
    result = _start(command, _env(SECRET_KEY=REAL_KEY, JWT_SIGNING_KEY="abc"))
    assert result.returncode != 0
    assert "core.E002" in result.stdout + result.stderr


def test_a_real_key_passes_and_the_explicit_dev_flag_lets_a_local_run_through():
    assert _start("check", _env(SECRET_KEY=REAL_KEY)).returncode == 0
    assert _start("check", _env(SYMPHAINY_INSECURE_DEV_KEY="1")).returncode == 0
    assert _start("check", _env(DEBUG="1")).returncode == 0


def test_the_check_in_process(settings):
    settings.SYMPHAINY = {}
    with override_settings(DEBUG=False, SECRET_KEY=DEVELOPMENT_SECRET_KEY):
        assert [e.id for e in signing_keys_check()] == ["core.E001"]
        with pytest.raises(ImproperlyConfigured, match="core.E001"):
            startup_checks_enforce()
    with override_settings(DEBUG=False, SECRET_KEY=REAL_KEY, SIMPLE_JWT={**settings.SIMPLE_JWT, "SIGNING_KEY": "k" * 31}):
        assert [e.id for e in signing_keys_check()] == ["core.E002"]
    with override_settings(DEBUG=False, SECRET_KEY=REAL_KEY, SIMPLE_JWT={**settings.SIMPLE_JWT, "SIGNING_KEY": "k" * 32}):
        assert signing_keys_check() == []


def test_a_rate_that_does_not_parse_is_a_start_up_error(settings):
    from core.checks import product_settings_check

    settings.SYMPHAINY = {**settings.SYMPHAINY, "INTENT_SUBMIT_RATE": "lots"}
    assert [e.id for e in product_settings_check()] == ["core.E003"]
