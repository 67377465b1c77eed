"""Hypothesis: bad configs and CLI argument lists end with exit code 2 and at most two lines that
name the bad key or value, never a traceback (``pcm-run --dry-run`` in process)."""

from __future__ import annotations

import string

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pcm_core.cli import main
from pcm_core.config import RunConfig, load_config

SECTIONS = {"env": RunConfig.model_fields["env"].annotation, "policy": RunConfig.model_fields["policy"].annotation,
            "pcm": RunConfig.model_fields["pcm"].annotation, "train": RunConfig.model_fields["train"].annotation,
            "tracking": RunConfig.model_fields["tracking"].annotation}
NAME = st.text(string.ascii_lowercase + "_", min_size=3, max_size=12)
BAD_NUMBERS = {  # key -> values pydantic must refuse
    "train.steps": st.integers(max_value=0),
    "train.tasks_per_step": st.integers(max_value=0),
    "train.group_size": st.integers(max_value=1),
    "train.lr": st.floats(max_value=0.0, allow_nan=False),
    "train.eval_every": st.integers(max_value=-1),
    "train.checkpoint_every": st.integers(max_value=-1),
    "train.keep_checkpoints": st.integers(max_value=0),
    "train.max_skipped_updates": st.integers(max_value=0),
    "pcm.budget": st.integers(max_value=0),
    "pcm.ema": st.one_of(st.floats(max_value=0.0, allow_nan=False), st.floats(min_value=1.001, allow_infinity=False)),
    "pcm.exploration_floor": st.floats(min_value=1.001, allow_infinity=False),
}
LITERALS = ["pcm.estimator", "train.device", "train.dtype", "train.loss_aggregation"]


@st.composite
def unknown_key(draw):
    section = draw(st.sampled_from(sorted(SECTIONS)))
    name = draw(NAME.filter(lambda n: n not in SECTIONS[section].model_fields))
    return ["--set", f"{section}.{name}=1"], name


@st.composite
def bad_number(draw):
    key = draw(st.sampled_from(sorted(BAD_NUMBERS)))
    value = draw(BAD_NUMBERS[key])
    return ["--set", f"{key}={value}"], key


@st.composite
def bad_literal(draw):
    key = draw(st.sampled_from(LITERALS))
    value = draw(NAME.filter(lambda v: v not in ("masked", "iw", "stratified", "auto", "cpu", "cuda", "float32", "bfloat16", "token_mean", "seq_mean", "traj_sum")))
    return ["--set", f"{key}={value}"], key


@st.composite
def unknown_component(draw):
    key = draw(st.sampled_from(["env.name", "policy.name", "pcm.segmenter", "pcm.proxy", "pcm.sampler"]))
    value = draw(NAME.map(lambda n: f"zz{n}"))
    return ["--set", f"{key}={value}"], value


@st.composite
def bad_cli(draw):
    kind = draw(st.sampled_from(["option", "no_equals", "empty_key", "missing_file"]))
    name = draw(NAME)
    if kind == "option":
        return [f"--{name}x"], f"--{name}x"
    if kind == "no_equals":
        return ["--set", name], name
    if kind == "empty_key":
        return ["--set", f"train..{name}=1"], name
    return ["--config", f"/nonexistent/{name}.yaml"], name


CASES = st.one_of(unknown_key(), bad_number(), bad_literal(), unknown_component(), bad_cli())


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=CASES)
def test_bad_arguments_exit_2_in_two_lines(case, capsys):
    argv, named = case
    with pytest.raises(SystemExit) as info:
        main([*argv, "--dry-run"])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert info.value.code == 2, captured.err
    assert 1 <= len(lines) <= 2, captured.err
    assert "Traceback" not in captured.err + captured.out
    assert named in captured.err, captured.err


DEFAULT_DUMP = yaml.safe_dump(load_config().model_dump(mode="json"), sort_keys=False).rstrip()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(st.text(max_size=40), st.lists(st.integers(), max_size=4).map(str)))
@example(text="")  # empty: no overrides
@example(text="# only a comment\n")
@example(text="{}")
@example(text="[1, 2]")  # a list, not a mapping
@example(text="a: [")  # not YAML
def test_bad_yaml_files_exit_2(text, tmp_path_factory, capsys):
    """Random text as a config file: exit 2 in at most two lines; or, when the text is no YAML
    mapping at all (empty, a comment, ``{}``), the default config is valid and printed."""
    path = tmp_path_factory.mktemp("cfg") / "bad.yaml"
    path.write_text(text)
    try:
        main(["--config", str(path), "--dry-run"])
    except SystemExit as exc:
        captured = capsys.readouterr()
        assert exc.code == 2, captured.err
        assert 1 <= len(captured.err.strip().splitlines()) <= 2 and "Traceback" not in captured.err
        return
    captured = capsys.readouterr()
    assert yaml.safe_load(text) in (None, {}), text  # only a file that sets nothing is valid here
    assert captured.err == ""
    assert captured.out.startswith(DEFAULT_DUMP + "\n"), captured.out
    assert captured.out.rstrip().splitlines()[-1].startswith("config valid: env=")
