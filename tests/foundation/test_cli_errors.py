"""Every user mistake ends with exit code 2 and two plain lines on stderr: the problem, then the fix.

Cases whose first error is found after config validation (component names and component options)
need the built-in env ``tabletop`` and policy ``tinyvla`` to be registered, because
``resolve_components`` checks env, then policy, then segmenter, proxy and sampler.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pcm_core.cli import main

ROOT = Path(__file__).resolve().parents[2]
PCM_RUN = str(Path(sys.executable).with_name("pcm-run"))


def _skip_installed_backend(argv: list[str]) -> None:
    """``--env libero`` (or another backend) is only a mistake where its extra is missing."""
    if argv[0] in ("--env", "--policy") and _backend_installed(argv[0][2:], argv[1]):
        pytest.skip(f"{argv[1]} is installed here")

def _alias_bomb() -> str:
    """377 bytes that expand to 9**9 strings ("billion laughs"), the last level under env.options.tasks."""
    text, previous = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n', "a"
    for name in "bcdefghi":
        text += f"{name}: &{name} [" + ",".join([f"*{previous}"] * 9) + "]\n"
        previous = name
    return text + "env:\n  options:\n    tasks: *i\n"


ALIAS_BOMB = _alias_bomb()
FLOW_ALIAS_BOMB = "[&a [0,0,0,0,0,0,0,0,0], " + ", ".join(
    f"&{n} [{', '.join([f'*{p}'] * 9)}]" for p, n in zip("abcdefgh", "bcdefghi")) + "]"
"""The same bomb on one line, for ``--set``."""

FILES = {
    "malformed.yaml": "pcm:\n  budget: [1, 2\ntrain: {}\n",
    "list.yaml": "- pcm\n- train\n",
    "scalar.yaml": "just a string\n",
    "badkey.yaml": "pcm:\n  budgit: 3\n",
    "badtype.yaml": "train:\n  steps: many\n",
    "badsection.yaml": "pcm: 3\n",
    "duplicate.yaml": "train:\n  steps: 3\n  steps: 5\n",
    "deep.yaml": "a: " + "[" * 20000 + "]" * 20000 + "\n",
    "bigint.yaml": "train:\n  steps: " + "9" * 5000 + "\n",
    "bomb.yaml": ALIAS_BOMB,
    "bomb_in_options.yaml": ALIAS_BOMB.replace("env:\n  options:\n    tasks: *i\n", "") + "env:\n  options:\n    tasks: *i\n",
}
BINARY_FILES = {"binary.yaml": b"\xff\xfe\x00train: 1\n", "latin1.yaml": "train:\n  output_dir: caf\xe9\n".encode("latin-1")}

# (id, argv, substrings the two stderr lines must contain); "{tmp}" is the folder holding FILES.
CASES = [
    # component names: a typo gets the nearest installed name
    ("env-typo", ["--env", "tabletp"], ["unknown env 'tabletp'", "did you mean 'tabletop'?"]),
    ("env-unrelated", ["--env", "zzzz"], ["unknown env 'zzzz'", "installed envs:", "tabletop"]),
    ("policy-typo", ["--policy", "tinyvl"], ["unknown policy 'tinyvl'", "did you mean 'tinyvla'?"]),
    ("segmenter-typo", ["--set", "pcm.segmenter=griper"], ["unknown segmenter 'griper'", "did you mean 'gripper'?"]),
    ("proxy-typo", ["--set", "pcm.proxy=success_failur"], ["unknown proxy 'success_failur'", "did you mean 'success_failure'?"]),
    ("sampler-typo", ["--set", "pcm.sampler=topK"], ["unknown sampler 'topK'", "did you mean 'topk'?"]),
    ("sampler-unrelated", ["--set", "pcm.sampler=qqqq"], ["unknown sampler 'qqqq'", "installed budget samplers:", "all", "pcm", "topk", "uniform"]),
    # known backends whose extra is not installed
    ("env-libero", ["--env", "libero"], ["env 'libero' is not installed", 'pip install "pcm-vla[libero]"']),
    ("env-maniskill", ["--env", "maniskill"], ["env 'maniskill'", "not installed", 'pip install "pcm-vla[maniskill]"']),
    # component options, validated against the component's own Options model
    ("segmenter-option-typo", ["--set", "pcm.segmenter_options.num_phase=3"],
     ["unknown key 'pcm.segmenter_options.num_phase'", "did you mean 'num_phases'?"]),
    ("segmenter-option-type", ["--set", "pcm.segmenter_options.num_phases=abc"],
     ["'pcm.segmenter_options.num_phases' = 'abc'", "valid integer"]),
    ("segmenter-option-range", ["--set", "pcm.segmenter_options.num_phases=0"],
     ["'pcm.segmenter_options.num_phases' = 0", "greater than or equal to 1"]),
    ("sampler-option-unknown", ["--set", "pcm.sampler_options.bogus_key=1"], ["unknown key 'pcm.sampler_options.bogus_key'"]),
    ("proxy-option-unknown", ["--set", "pcm.proxy_options.bogus_key=1"], ["unknown key 'pcm.proxy_options.bogus_key'"]),
    ("env-option-unknown", ["--set", "env.options.bogus_key=1"], ["unknown key 'env.options.bogus_key'"]),
    ("policy-option-unknown", ["--set", "policy.options.bogus_key=1"], ["unknown key 'policy.options.bogus_key'"]),
    # top-level keys
    ("section-typo", ["--set", "trian.steps=3"], ["unknown key 'trian'", "did you mean 'train'?"]),
    ("section-unknown", ["--set", "foo=1"], ["unknown key 'foo'", "valid keys: distributed, env, evaluation, pcm, policy, tracking, train"]),
    ("pcm-key-typo", ["--set", "pcm.budgt=3"], ["unknown key 'pcm.budgt'", "did you mean 'budget'?"]),
    ("sft-key-typo", ["--set", "train.sft.epoch=3"], ["unknown key 'train.sft.epoch'", "did you mean 'epochs'?"]),
    ("tracking-key-typo", ["--set", "tracking.enabeld=false"], ["unknown key 'tracking.enabeld'", "did you mean 'enabled'?"]),
    ("section-not-mapping", ["--set", "pcm=3"], ["'pcm' = 3", "valid dictionary"]),
    ("options-not-mapping", ["--set", "pcm.segmenter_options=3"], ["'pcm.segmenter_options' = 3", "valid dictionary"]),
    # values: types and ranges
    ("budget-zero", ["--set", "pcm.budget=0"], ["'pcm.budget' = 0", "greater than 0", "set pcm.budget"]),
    ("budget-negative", ["--set", "pcm.budget=-3"], ["'pcm.budget' = -3", "greater than 0"]),
    ("budget-string", ["--set", "pcm.budget=abc"], ["'pcm.budget' = 'abc'", "valid integer"]),
    ("budget-fraction", ["--set", "pcm.budget=1.5"], ["'pcm.budget' = 1.5", "fractional part"]),
    ("budget-list", ["--set", "pcm.budget=[1,2]"], ["'pcm.budget' = [1, 2]", "valid integer"]),
    ("floor-above-one", ["--set", "pcm.exploration_floor=1.5"], ["'pcm.exploration_floor' = 1.5", "less than or equal to 1"]),
    ("floor-negative", ["--set", "pcm.exploration_floor=-0.1"], ["'pcm.exploration_floor' = -0.1", "greater than or equal to 0"]),
    ("ema-zero", ["--set", "pcm.ema=0"], ["'pcm.ema' = 0", "greater than 0"]),
    ("ema-above-one", ["--set", "pcm.ema=1.5"], ["'pcm.ema' = 1.5", "less than or equal to 1"]),
    ("clip-high-below-low", ["--set", "train.clip_high=0.1"], ["'train.clip_high' = 0.1", "clip_low = 0.2", "clip_high >= clip_low"]),
    ("clip-low-one", ["--set", "train.clip_low=1.0"], ["'train.clip_low' = 1.0", "less than 1"]),
    ("estimator", ["--set", "pcm.estimator=ht"], ["'pcm.estimator' = 'ht'", "'masked', 'iw' or 'stratified'"]),
    ("aggregation", ["--set", "train.loss_aggregation=mean"], ["'train.loss_aggregation' = 'mean'", "'token_mean'"]),
    ("device", ["--set", "train.device=tpu"], ["'train.device' = 'tpu'", "'auto', 'cpu' or 'cuda'"]),
    ("bool", ["--set", "pcm.online=maybe"], ["'pcm.online' = 'maybe'", "valid boolean"]),
    ("group-size-one", ["--set", "train.group_size=1"], ["'train.group_size' = 1", "greater than or equal to 2"]),
    ("steps-zero", ["--set", "train.steps=0"], ["'train.steps' = 0", "greater than 0"]),
    ("seed-negative", ["--set", "train.seed=-1"], ["'train.seed' = -1", "greater than or equal to 0"]),
    ("adam-beta1-one", ["--set", "train.adam_betas=[1.0, 0.999]"], ["'train.adam_betas.0' = 1.0", "less than 1"]),
    ("adam-beta2-negative", ["--set", "train.adam_betas=[0.9, -0.1]"], ["'train.adam_betas.1' = -0.1", "greater than or equal to 0"]),
    ("adam-betas-one-value", ["--set", "train.adam_betas=[0.9]"], ["'train.adam_betas.1'", "Field required"]),
    ("adam-betas-scalar", ["--set", "train.adam_betas=0.9"], ["'train.adam_betas' = 0.9", "valid tuple"]),
    # distributed
    ("distributed-key-typo", ["--set", "distributed.stratgy=ddp"], ["unknown key 'distributed.stratgy'", "did you mean 'strategy'?"]),
    ("distributed-strategy", ["--set", "distributed.strategy=zero"], ["'distributed.strategy' = 'zero'", "'ddp' or 'fsdp'"]),
    ("distributed-backend", ["--set", "distributed.backend=mpi"], ["'distributed.backend' = 'mpi'", "'auto', 'gloo' or 'nccl'"]),
    ("rollout-workers-negative", ["--set", "distributed.rollout_workers=-1"],
     ["'distributed.rollout_workers' = -1", "greater than or equal to 0"]),
    ("rollout-workers-option-negative", ["--rollout-workers", "-1"], ["--rollout-workers", "greater than or equal to 0"]),
    ("max-restarts-negative", ["--set", "distributed.max_restarts=-2"], ["'distributed.max_restarts' = -2", "greater than or equal to 0"]),
    ("rollout-timeout-zero", ["--set", "distributed.rollout_timeout_s=0"], ["'distributed.rollout_timeout_s' = 0", "greater than 0"]),
    ("collective-timeout-zero", ["--set", "distributed.timeout_s=0"], ["'distributed.timeout_s' = 0", "greater than 0"]),
    ("more-ranks-than-groups", ["--dry-run", "--nproc", "3", "--set", "train.tasks_per_step=2"],
     ["train.tasks_per_step = 2 is below the 3 ranks (--nproc 3)", "--set train.tasks_per_step=3 (or more), or --nproc 2"]),
    ("more-actors-than-groups", ["--dry-run", "--nproc", "2", "--rollout-workers", "3", "--set", "train.tasks_per_step=5"],
     ["distributed.rollout_workers = 3 is more than the 2 groups a rank gets (train.tasks_per_step = 5 over 2 ranks)",
      "--set distributed.rollout_workers=2 or fewer, or --set train.tasks_per_step=6"]),
    # config files
    ("config-missing", ["--config", "{tmp}/missing.yaml"], ["missing.yaml' does not exist", "--config"]),
    ("config-malformed", ["--config", "{tmp}/malformed.yaml"], ["malformed.yaml' is not valid YAML at line 3", "correct the YAML"]),
    ("config-list", ["--config", "{tmp}/list.yaml"], ["list.yaml' holds a list, not a mapping", "'pcm:'"]),
    ("config-scalar", ["--config", "{tmp}/scalar.yaml"], ["scalar.yaml' holds a str, not a mapping"]),
    ("config-unknown-key", ["--config", "{tmp}/badkey.yaml"], ["unknown key 'pcm.budgit'", "did you mean 'budget'?"]),
    ("config-bad-type", ["--config", "{tmp}/badtype.yaml"], ["'train.steps' = 'many'", "valid integer"]),
    ("config-bad-section", ["--config", "{tmp}/badsection.yaml"], ["'pcm' = 3"]),
    ("config-no-argument", ["--config"], ["'--config' requires an argument", "pcm-run --help"]),
    # hostile files and values: bounded work, capped messages
    ("config-alias-bomb", ["--config", "{tmp}/bomb.yaml"], ["bomb.yaml' expands to more than 100000 values", "without aliases"]),
    ("config-alias-bomb-options", ["--config", "{tmp}/bomb_in_options.yaml"], ["expands to more than 100000 values"]),
    ("override-alias-bomb", ["--set", "env.options.tasks=" + FLOW_ALIAS_BOMB], ["override 'env.options.tasks' expands to more than"]),
    ("config-duplicate-key", ["--config", "{tmp}/duplicate.yaml"], ["duplicate key 'steps' at line 3", "write each key once"]),
    ("config-deep", ["--config", "{tmp}/deep.yaml"], ["deep.yaml' nests too deeply"]),
    ("config-bigint", ["--config", "{tmp}/bigint.yaml"], ["bigint.yaml' holds a value YAML cannot read"]),
    ("config-binary", ["--config", "{tmp}/binary.yaml"], ["binary.yaml' is not UTF-8 text (byte 0)", "save it as UTF-8"]),
    ("config-latin1", ["--config", "{tmp}/latin1.yaml"], ["latin1.yaml' is not UTF-8 text", "save it as UTF-8"]),
    ("config-directory", ["--config", "{tmp}"], ["does not exist"]),
    *[(f"{key}-{spelling}", ["--set", f"{key}={spelling}"], [f"'{key}'", "finite number"])
      for key in ("train.lr", "train.max_grad_norm", "train.clip_high", "train.kl_coef", "train.sft.lr")
      for spelling in (".inf", "inf", "1.0e309", "-.inf", ".nan")],
    ("env-option-inf", ["--set", "env.options.max_translation=.inf"], ["'env.options.max_translation' = inf", "finite number"]),
    ("steps-bool", ["--set", "train.steps=true"], ["'train.steps' = True", "a boolean is not a number"]),
    ("budget-bool", ["--set", "pcm.budget=false"], ["'pcm.budget' = False", "a boolean is not a number"]),
    ("env-option-bool", ["--set", "env.options.max_steps=true"], ["'env.options.max_steps' = True", "a boolean is not a number"]),
    ("seed-too-large", ["--set", "train.seed=4294967296"], ["'train.seed' = 4294967296", "less than or equal to 2147483647"]),
    ("sft-seed-too-large", ["--set", "train.sft.seed=99999999999"], ["'train.sft.seed'", "less than or equal to 2147483647"]),
    ("long-value-capped", ["--set", "train.output_dir=[" + ",".join(["1"] * 5000) + "]"], ["'train.output_dir' = [1, 1, 1, 1, 1, 1, ...]"]),
    # override syntax
    ("override-no-equals", ["--set", "pcm.budget"], ["override 'pcm.budget' has no '='", "--set KEY=VALUE"]),
    ("override-empty-key", ["--set", "=3"], ["override '=3' has an empty key", "--set KEY=VALUE"]),
    ("override-empty-part", ["--set", "pcm..budget=3"], ["override 'pcm..budget=3' has an empty key"]),
    ("override-no-argument", ["--set"], ["'--set' requires an argument"]),
    # command line
    ("unknown-option", ["--bogus"], ["No such option: --bogus", "pcm-run --help"]),
    ("option-typo", ["--sett", "pcm.budget=3"], ["No such option: --sett", "--set"]),
    ("unknown-command", ["trian"], ["No such command 'trian'", "pcm-run --help"]),
    ("plugins-unknown-option", ["plugins", "--all"], ["No such option: --all"]),
]


@pytest.fixture
def files(tmp_path):
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
    for name, data in BINARY_FILES.items():
        (tmp_path / name).write_bytes(data)
    return tmp_path


def _argv(argv, folder):
    return [a.replace("{tmp}", str(folder)) for a in argv]


def _backend_installed(kind: str, name: str) -> bool:
    """A backend's plugin is registered and the modules it needs import (its extra is installed)."""
    from pcm_core.registry import get_registry

    registration = get_registry().components(kind).get(name)
    return registration is not None and not registration.missing_modules()


def _check_stderr(stderr: str, expected: list[str]) -> None:
    lines = stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2, stderr
    assert "Traceback" not in stderr
    assert lines[0].startswith("pcm-run: "), lines
    if len(lines) == 2:
        assert lines[1].startswith("Fix:"), lines
    for text in expected:
        assert text in stderr, f"{text!r} not in {stderr!r}"


@pytest.mark.parametrize("argv, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_in_process(argv, expected, files, capsys):
    _skip_installed_backend(argv)
    with pytest.raises(SystemExit) as info:
        main(["--dry-run", *_argv(argv, files)])  # --dry-run: a case that wrongly passes must not train
    captured = capsys.readouterr()
    assert info.value.code == 2, captured.err
    assert captured.out == ""
    _check_stderr(captured.err, expected)


@pytest.mark.parametrize("name", ["openvla", "openvla-oft"])
def test_openvla_without_its_extra(name, monkeypatch, capsys):
    """The openvla policies are built in; without their extra, naming one says what to install."""
    from pcm_core.registry import get_registry

    monkeypatch.setattr(get_registry().get("policy", name).cls, "requires", ("pcm_absent_module_xyz",))
    with pytest.raises(SystemExit) as info:
        main(["--dry-run", "--policy", name])
    captured = capsys.readouterr()
    assert info.value.code == 2, captured.err
    _check_stderr(captured.err, [f"policy '{name}'", 'pip install "pcm-vla[openvla]"'])


SUBPROCESS_CASES = ["env-libero", "budget-zero", "config-missing", "config-list", "unknown-option", "override-no-equals"]


@pytest.mark.parametrize("case", SUBPROCESS_CASES)
def test_bad_input_console_script(case, files):
    _, argv, expected = next(c for c in CASES if c[0] == case)
    _skip_installed_backend(argv)
    env = {k: v for k, v in os.environ.items() if k != "PCM_PLUGINS"}
    proc = subprocess.run([PCM_RUN, "--dry-run", *_argv(argv, files)], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    _check_stderr(proc.stderr, expected)


def test_dry_run_defaults_prints_resolved_config(capsys):
    main(["--dry-run"])  # returns normally: exit code 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert "budget: 12" in captured.out
    assert "name: tabletop" in captured.out and "name: tinyvla" in captured.out
    assert "config valid" in captured.out
    assert "segmenter=env" in captured.out and "sampler=pcm" in captured.out


def test_dry_run_applies_overrides(capsys):
    main(["--dry-run", "--set", "pcm.budget=5", "--set", "pcm.sampler=all", "--set", "pcm.segmenter_options.num_phases=2"])
    out = capsys.readouterr().out
    assert "budget: 5" in out and "sampler: all" in out and "num_phases: 2" in out


def test_dry_run_console_script_exit_zero():
    proc = subprocess.run([PCM_RUN, "--dry-run"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "config valid" in proc.stdout


def _components(config) -> dict[str, tuple[str, dict]]:
    """kind -> (name, options) of every component ``config`` names, as ``resolve_components`` reads them."""
    return {
        "env": (config.env.name, config.env.options),
        "policy": (config.policy.name, config.policy.options),
        "segmenter": (config.pcm.segmenter, config.pcm.segmenter_options),
        "proxy": (config.pcm.proxy, config.pcm.proxy_options),
        "sampler": (config.pcm.sampler, config.pcm.sampler_options),
    }


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_shipped_configs_validate(name, capsys):
    """Every shipped config validates; where a backend's extra is missing, everything else still
    does (the run config, and the options of every installed component)."""
    from pcm_core.config import load_config
    from pcm_core.registry import get_registry

    path = ROOT / "configs" / name
    config = load_config(path)  # the run config itself needs no extra
    missing = []
    for kind, (component, options) in _components(config).items():
        registration = get_registry().get(kind, component)  # registered even without its extra
        if registration.missing_modules():
            missing.append((kind, component))
        else:
            registration.cls.Options.model_validate(options)
    try:
        main(["--dry-run", "--config", str(path)])
    except SystemExit as exc:
        err = capsys.readouterr().err
        assert missing and exc.code == 2, err
        kind, component = missing[0]  # resolve_components reports the first one it meets
        _check_stderr(err, [f"{kind} '{component}' is not installed", 'pip install "pcm-vla['])
        pytest.skip(f"validated all but {', '.join(f'{k} {c}' for k, c in missing)}: {err.strip().splitlines()[0]}")
    assert not missing
    assert "config valid" in capsys.readouterr().out


def test_dry_run_prints_loadable_yaml(capsys):
    import yaml

    long_dir = "/tmp/" + "/".join(["a_rather_long_folder_name"] * 5) + "/runs"
    main(["--dry-run", "--set", "tracking.run_name=[bold]x", "--set", f"train.output_dir={long_dir}"])
    printed = yaml.safe_load(capsys.readouterr().out.split("config valid")[0])
    assert printed["tracking"]["run_name"] == "[bold]x"
    assert printed["train"]["output_dir"] == long_dir


def test_dry_run_rollout_workers_without_ray(capsys, monkeypatch):
    """--dry-run finds a missing Ray for distributed.rollout_workers > 0 (it was found only when training started)."""
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name == "ray" else find_spec(name, *args))
    with pytest.raises(SystemExit) as info:
        main(["--dry-run", "--rollout-workers", "2"])
    captured = capsys.readouterr()
    assert info.value.code == 2 and captured.out == ""
    _check_stderr(captured.err, ["distributed.rollout_workers = 2 needs Ray", 'pip install "pcm-vla[distributed]"'])


@pytest.mark.parametrize("case", ["config-alias-bomb", "override-alias-bomb", "config-deep", "config-bigint"])
def test_hostile_config_within_a_memory_cap(case, files):
    """The alias bomb once took 8 GB and 132 s: now refused under a 2 GB address-space cap in seconds."""
    import resource

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 * 1024**3, 2 * 1024**3))

    _, argv, expected = next(c for c in CASES if c[0] == case)
    env = {k: v for k, v in os.environ.items() if k != "PCM_PLUGINS"}
    proc = subprocess.run([PCM_RUN, "--dry-run", *_argv(argv, files)], capture_output=True, text=True, env=env,
                          timeout=30, preexec_fn=cap)
    assert proc.returncode == 2, proc.stderr
    _check_stderr(proc.stderr, expected)


def test_cuda_without_a_gpu_is_two_lines(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(SystemExit) as info:
        main(["--set", "train.device=cuda", "--set", "tracking.enabled=false", "--set", f"train.output_dir={tmp_path}"])
    assert info.value.code == 2
    _check_stderr(capsys.readouterr().err, ["train.device = 'cuda', but torch sees no CUDA device", "--set train.device=cpu"])
