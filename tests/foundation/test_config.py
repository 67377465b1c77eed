"""RunConfig: defaults, precedence of the sources, override parsing, strictness."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pydantic
import pytest

from pcm_core.config import RunConfig, load_config, parse_override
from pcm_core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "configs" / "quickstart.yaml"


def test_defaults():
    config = load_config()
    assert config == RunConfig()
    assert (config.env.name, config.policy.name) == ("tabletop", "tinyvla")
    assert (config.pcm.segmenter, config.pcm.proxy, config.pcm.sampler) == ("env", "success_failure", "pcm")
    assert config.pcm.budget == 12
    assert config.pcm.estimator == "masked"
    assert config.pcm.exploration_floor == 0.1
    assert config.pcm.ema == 0.3
    assert (config.train.clip_low, config.train.clip_high) == (0.2, 0.28)
    assert config.train.group_size == 8
    assert config.train.sft.enabled is True
    assert config.env.options == {} and config.pcm.segmenter_options == {}
    assert config.tracking.uri is None


def test_precedence_file_then_env_policy_then_set(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("env: {name: from_file}\npolicy: {name: from_file}\npcm: {budget: 5, ema: 0.5}\n")

    config = load_config(path)
    assert (config.env.name, config.policy.name, config.pcm.budget, config.pcm.ema) == ("from_file", "from_file", 5, 0.5)

    config = load_config(path, env="from_flag", policy="from_flag")
    assert (config.env.name, config.policy.name) == ("from_flag", "from_flag")
    assert config.pcm.budget == 5  # untouched keys keep the file's value

    config = load_config(path, ["env.name=from_set", "pcm.budget=7", "pcm.budget=9"], env="from_flag", policy="from_flag")
    assert config.env.name == "from_set"  # --set beats --env
    assert config.policy.name == "from_flag"
    assert config.pcm.budget == 9  # later --set wins
    assert config.pcm.ema == 0.5  # file value survives
    assert config.train.steps == RunConfig().train.steps  # default survives


def test_file_keeps_sibling_defaults(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  sft: {epochs: 1}\n")
    config = load_config(path, ["train.sft.demos=8"])
    assert (config.train.sft.epochs, config.train.sft.demos, config.train.sft.lr) == (1, 8, 1e-3)


@pytest.mark.parametrize(
    "text, keys, value",
    [
        ("pcm.budget=12", ["pcm", "budget"], 12),
        ("train.lr=0.0003", ["train", "lr"], 0.0003),
        ("pcm.online=true", ["pcm", "online"], True),
        ("pcm.online=false", ["pcm", "online"], False),
        ("pcm.online=no", ["pcm", "online"], False),
        ("env.options.xs=[1,2]", ["env", "options", "xs"], [1, 2]),
        ("pcm.segmenter_options={num_phases: 3}", ["pcm", "segmenter_options"], {"num_phases": 3}),
        ("pcm.sampler=topk", ["pcm", "sampler"], "topk"),
        ('tracking.run_name="42"', ["tracking", "run_name"], "42"),
        ("tracking.uri=null", ["tracking", "uri"], None),
        ("tracking.run_name=", ["tracking", "run_name"], ""),
        ("tracking.uri=sqlite:///a=b.db", ["tracking", "uri"], "sqlite:///a=b.db"),
        (" pcm.budget =3", ["pcm", "budget"], 3),
        ("tracking.run_name=a: b: c", ["tracking", "run_name"], "a: b: c"),  # invalid YAML stays a string
    ],
)
def test_parse_override_reads_values_as_yaml(text, keys, value):
    got_keys, got_value = parse_override(text)
    assert got_keys == keys
    assert got_value == value and type(got_value) is type(value)


def test_override_values_are_validated_and_coerced():
    config = load_config(overrides=["train.lr=1e-3", "pcm.segmenter_options={num_phases: 3}", "env.options.max_steps=64"])
    assert config.train.lr == 0.001  # YAML reads 1e-3 as a string; the float field converts it
    assert config.pcm.segmenter_options == {"num_phases": 3}
    assert config.env.options == {"max_steps": 64}


@pytest.mark.parametrize("text", ["pcm.budget", "=3", "pcm..budget=3", ".budget=3", "pcm.=3", " =3"])
def test_malformed_override(text):
    with pytest.raises(ConfigError, match="--set KEY=VALUE"):
        parse_override(text)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["pcm.budgt=3"], "unknown key 'pcm.budgt'.\nFix: did you mean 'budget'?"),
        (["nope=1"], "unknown key 'nope'"),
        (["train.sft.epoch=2"], "did you mean 'epochs'?"),
        (["tracking.uri.host=x"], "'tracking.uri' = a mapping"),
    ],
)
def test_unknown_keys_are_errors(overrides, message):
    with pytest.raises(ConfigError) as info:
        load_config(overrides=overrides)
    assert message in str(info.value)
    assert len(str(info.value).splitlines()) == 2


def test_unknown_key_in_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("pcm:\n  budget: 4\n  segmentr: gripper\n")
    with pytest.raises(ConfigError, match="unknown key 'pcm.segmentr'.\nFix: did you mean 'segmenter'"):
        load_config(path)


def test_empty_file_is_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing\n")
    assert load_config(path) == RunConfig()


def test_sections_are_strict_on_assignment():
    config = RunConfig()
    with pytest.raises(pydantic.ValidationError, match=r"budget\n  Input should be greater than 0"):
        config.pcm.budget = 0
    with pytest.raises(pydantic.ValidationError, match=r"budgt\n  Object has no attribute 'budgt'"):
        config.pcm.budgt = 3
    assert config.pcm.budget == 12 and config == RunConfig()  # a refused assignment changes nothing


def test_clip_high_equal_to_clip_low_is_allowed():
    config = load_config(overrides=["train.clip_low=0.25", "train.clip_high=0.25"])
    assert config.train.clip_high == config.train.clip_low == 0.25


def test_quickstart_restates_the_defaults():
    assert load_config(QUICKSTART) == load_config()


def test_configuration_reference_is_up_to_date():
    spec = importlib.util.spec_from_file_location("generate_config_reference", ROOT / "docs" / "generate_config_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert committed == module.render(), "run: python docs/generate_config_reference.py"
    for section, model in [("pcm", RunConfig.model_fields["pcm"].annotation), ("train", RunConfig.model_fields["train"].annotation)]:
        for key in model.model_fields:
            assert f"`{section}.{key}`" in committed
