"""Errors of Options model validators name their section; the registry reports a
broken plugin's own error, warns about a name registered twice and writes correct plurals."""

from __future__ import annotations

import logging
import sys

import pytest
from pydantic import BaseModel, ValidationError, model_validator

from pcm_core.cli import main
from pcm_core.config import format_validation_error, load_config, resolve_components
from pcm_core.errors import ConfigError, MissingBackendError, UnknownComponentError
from pcm_core.registry import Registry, get_registry

DUPLICATE_PLUGIN = '''
import pcm_core
from pcm_core.interfaces import PhaseSegmenter


class Gripper(PhaseSegmenter):
    num_phases = 1

    def segment(self, batch):
        raise NotImplementedError


@pcm_core.hookimpl
def pcm_register_segmenters(register):
    register("gripper", Gripper)
'''


# --- errors of model validators ------------------------------------------------------------------


def test_model_validator_error_names_the_section():
    config = load_config(overrides=["policy.options.hidden_size=130"])
    with pytest.raises(ConfigError) as caught:
        resolve_components(config)
    assert str(caught.value).splitlines() == [
        "policy.options: hidden_size 130 is not divisible by num_heads 4.",
        "Fix: change the keys of policy.options it names so they agree (see `pcm-run plugins`).",
    ]


def test_cli_prints_the_section_of_a_model_validator_error(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["--dry-run", "--set", "policy.options.hidden_size=130"])
    assert caught.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        "pcm-run: policy.options: hidden_size 130 is not divisible by num_heads 4.",
        "Fix: change the keys of policy.options it names so they agree (see `pcm-run plugins`).",
    ]


class _Pair(BaseModel):
    low: int = 0
    high: int = 1

    @model_validator(mode="after")
    def _ordered(self) -> "_Pair":
        if self.high < self.low:
            raise ValueError(f"high {self.high} is below low {self.low}.")
        return self


def test_model_validator_error_without_prefix_names_the_config():
    with pytest.raises(ValidationError) as caught:
        _Pair(low=3, high=2)
    assert format_validation_error(caught.value).splitlines() == [
        "the config: high 2 is below low 3.",
        "Fix: change the keys of the config it names so they agree (see docs/configuration.md).",
    ]


def test_field_error_keeps_its_key():
    with pytest.raises(ValidationError) as caught:
        _Pair(low="many")
    first = format_validation_error(caught.value, prefix="env.options.").splitlines()[0]
    assert first.startswith("'env.options.low' = 'many': ")


# --- registry ------------------------------------------------------------------------------------


def test_known_backend_of_a_broken_plugin_reports_the_plugin_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pcm_openvla.plugin", None)  # importing it now raises
    registry = Registry(load_entry_points=False)
    with pytest.raises(MissingBackendError) as caught:
        registry.get("policy", "openvla")
    problem, fix = str(caught.value).splitlines()
    assert problem.startswith("policy 'openvla' cannot be loaded: plugin pcm_openvla.plugin failed with ModuleNotFoundError")
    assert "is not installed" not in problem
    assert fix == 'Fix: correct that error (a missing module: pip install "pcm-vla[openvla]")'


def test_duplicate_name_keeps_the_first_and_records_both(tmp_path, monkeypatch, caplog):
    """Recorded for `pcm-run plugins`, not warned on every command (an error stays two lines)."""
    (tmp_path / "dup_gripper_plugin.py").write_text(DUPLICATE_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr("pcm_core.registry.BUILTIN_PLUGINS", ("pcm_phases.plugin", "dup_gripper_plugin"))
    with caplog.at_level(logging.WARNING, logger="pcm_core.registry"):
        registry = Registry(load_entry_points=False)
    assert registry.get("segmenter", "gripper").plugin == "pcm_phases.plugin"
    assert caplog.records == []
    (message,) = registry.duplicates
    assert "plugin dup_gripper_plugin registers segmenter 'gripper'" in message
    assert "plugin pcm_phases.plugin already registered" in message
    assert registry.broken == []


EXITING_PLUGIN = "import sys\nsys.exit(3)\n"
NOT_PYDANTIC_PLUGIN = DUPLICATE_PLUGIN.replace("num_phases = 1", "num_phases = 1\n    Options = dict").replace(
    'register("gripper", Gripper)', 'register("odd", Gripper)')


@pytest.mark.parametrize("source, error", [(EXITING_PLUGIN, "SystemExit: 3"), (NOT_PYDANTIC_PLUGIN, "whose Options is not")])
def test_a_hostile_plugin_is_marked_broken_and_the_rest_works(tmp_path, monkeypatch, source, error):
    (tmp_path / "hostile_plugin.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr("pcm_core.registry.BUILTIN_PLUGINS", ("pcm_phases.plugin", "hostile_plugin"))
    registry = Registry(load_entry_points=False)
    (broken,) = registry.broken
    assert broken.plugin == "hostile_plugin" and error in broken.error
    assert registry.get("segmenter", "gripper").plugin == "pcm_phases.plugin"
    assert "odd" not in registry.components("segmenter")


@pytest.mark.parametrize("kind, plural", [("policy", "policies"), ("proxy", "variance proxies"), ("env", "envs")])
def test_unknown_name_lists_the_installed_plural(kind, plural):
    with pytest.raises(UnknownComponentError) as caught:
        get_registry().get(kind, "qqqq_none")
    assert f"installed {plural}: " in str(caught.value)
