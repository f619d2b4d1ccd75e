"""The import rules of docs/architecture.md#the-floors, checked on every module.

`core/` is the ground floor and imports no app; any module may import an app's
`models`; the session domain (`sessions_runtime/`) imports `core/` and models only;
`accounts/` may call the domain; `realtime/` may call `accounts.tokens`, the domain and
`core/`; nothing imports the project package `symphainy/`. Imports inside functions and
under TYPE_CHECKING count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = ("core", "accounts", "sessions_runtime", "realtime", "console")
PROJECT = "symphainy"


def _allowed(importer: str, target: str) -> bool:
    """May a module of app `importer` import module `target` (dotted, of this project)?"""
    top = target.split(".")[0]
    if top == importer:
        return True
    if top == PROJECT:
        return False
    if importer == "core":
        return False
    if target == f"{top}.models" or target.startswith(f"{top}.models."):
        return True
    if top == "core":
        return True
    allowed = {
        "sessions_runtime": (),
        "accounts": ("sessions_runtime",),
        "realtime": ("sessions_runtime", "accounts.tokens"),
        "console": (),
    }[importer]
    return any(target == prefix or target.startswith(prefix + ".") for prefix in allowed)


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from accounts import tokens` imports accounts.tokens
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in found if name.split(".")[0] in (*APPS, PROJECT)]


def _resolve(name: str) -> str:
    """`accounts.tokens.token_decode` -> `accounts.tokens`: the longest prefix that is a module."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ROOT.joinpath(*parts[:end])
        if candidate.with_suffix(".py").exists() or (candidate / "__init__.py").exists():
            return ".".join(parts[:end])
    return name


MODULES = sorted(p for app in APPS for p in (ROOT / app).rglob("*.py") if "migrations" not in p.parts)


def test_every_app_is_checked():
    assert {p.relative_to(ROOT).parts[0] for p in MODULES} == set(APPS)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_run_downwards(path: Path):
    importer = path.relative_to(ROOT).parts[0]
    forbidden = [
        f"line {line}: {target}"
        for line, name in _imports(path)
        if not _allowed(importer, target := _resolve(name))
    ]
    assert not forbidden, f"{path.relative_to(ROOT)} imports what its floor may not: {forbidden}"


def test_the_rules_can_fail():
    """The checker itself refuses what the floors forbid."""
    assert not _allowed("core", "accounts.models")
    assert not _allowed("sessions_runtime", "accounts.tokens")
    assert not _allowed("sessions_runtime", "realtime.handshake")
    assert not _allowed("realtime", "accounts.services")
    assert not _allowed("accounts", "realtime.handshake")
    assert not _allowed("accounts", "symphainy.settings")
    assert _allowed("sessions_runtime", "realtime.models")
    assert _allowed("realtime", "accounts.tokens")
    assert _allowed("accounts", "sessions_runtime.services")
