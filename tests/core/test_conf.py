"""The settings table of core.conf: one row per setting, its default readable from its own
environment spelling, and docs/configuration.md generated from it."""

from __future__ import annotations

from pathlib import Path

from core.conf import DEFAULTS, PROJECT_VARIABLES, SETTINGS
from core.management.commands.settings_doc import REGENERATE, configuration_page

ROOT = Path(__file__).resolve().parents[2]


def test_docs_configuration_is_what_the_table_generates():
    page = ROOT / "docs" / "configuration.md"
    assert page.exists() and page.read_text() == configuration_page(), (
        f"docs/configuration.md differs from the settings table of core/conf.py; regenerate it: {REGENERATE}"
    )


def test_each_key_and_variable_is_declared_once():
    keys = [setting.key for setting in SETTINGS]
    names = [s.env for s in SETTINGS if s.env] + [v.name for vs in PROJECT_VARIABLES.values() for v in vs]
    assert len(keys) == len(set(keys)) == len(DEFAULTS)
    assert len(names) == len(set(names))


def test_each_default_reads_back_from_its_environment_text():
    # What the page shows as the default is what the variable would have to say.
    for setting in SETTINGS:
        if setting.env and setting.default is not None:
            assert setting.unit.parse(setting.unit.text(setting.default)) == setting.default, setting.key


def test_a_duration_that_must_outlast_another_names_a_duration():
    for setting in SETTINGS:
        if setting.longer_than:
            assert setting.longer_than in DEFAULTS and DEFAULTS[setting.longer_than] < setting.default
