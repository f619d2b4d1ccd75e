"""The README's quick start, followed literally: `make examples` installs what the examples
import beyond the runtime, and `make manage` runs operator commands against the local run."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from tests.live import ROOT

BIN = Path(sys.executable).parent


def requirement_names(path: Path) -> dict[str, str]:
    """name (normalised) -> the line's pin, of a requirements file and the files it includes."""
    names: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            names.update(requirement_names(path.parent / line[3:].strip()))
        elif line:
            name = re.split(r"[=<>!~\[; ]", line, maxsplit=1)[0]
            names[re.sub(r"[-_.]+", "-", name).lower()] = line
    return names


def test_every_package_an_example_imports_is_installed_by_make_run_or_make_examples():
    runtime, examples = requirement_names(ROOT / "requirements.txt"), requirement_names(ROOT / "examples" / "requirements.txt")
    dev = requirement_names(ROOT / "requirements-dev.txt")
    # One pin per package: examples/requirements.txt says what requirements-dev.txt says.
    assert {name: dev.get(name) for name in examples} == examples
    providers = packages_distributions()
    missing = []
    for script in sorted((ROOT / "examples").glob("*.py")):
        for node in ast.walk(ast.parse(script.read_text())):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
            for module in modules:
                top = module.split(".")[0]
                if top in sys.stdlib_module_names or top == "__future__":
                    continue
                distributions = {re.sub(r"[-_.]+", "-", d).lower() for d in providers.get(top, [top])}
                if not distributions & (set(runtime) | set(examples)):
                    missing.append(f"{script.name}: {top}")
    assert missing == []


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_manage_runs_an_operator_command_against_the_local_run(tmp_path):
    """Without SYMPHAINY_INSECURE_DEV_KEY in the environment, as after `make run` in a new shell."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("SYMPHAINY_INSECURE_DEV_KEY", "DEBUG", "SECRET_KEY", "DATABASE_URL", "REDIS_URL",
                        "SYMPHAINY_REQUIRE_SERVICES", "DJANGO_SETTINGS_MODULE", "MAKEFLAGS", "MAKELEVEL")}
    env["SQLITE_PATH"] = str(tmp_path / "db.sqlite3")
    # This run's interpreter, its venv taken as made (-o: never re-created by a test).
    make = ["make", "-s", "-C", str(ROOT), f"BIN={BIN}", "-o", f"{BIN}/.installed"]

    plain = subprocess.run([sys.executable, "manage.py", "sessions", "list"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
    assert plain.returncode != 0 and "core.E001" in plain.stderr  # what a new user hit

    for args in ("migrate --noinput -v 0", "seed_demo", "users list"):
        result = subprocess.run([*make, "manage", f"ARGS={args}"], env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
    assert "demo@symphainy.local" in result.stdout
