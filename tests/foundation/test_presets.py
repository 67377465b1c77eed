"""Presets: `pcm-run --env E --policy P` without --config starts from the pair's preset and says so;
a preset that needs a GPU refuses, in two lines, to start without one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from pcm_core.cli import main
from pcm_core.presets import Preset
from pcm_core.registry import get_registry

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tabletop_preset(tmp_path, monkeypatch):
    config = tmp_path / "preset.yaml"
    config.write_text("pcm:\n  budget: 7\ntrain:\n  lr: 3.0e-5\n")
    preset = Preset("tabletop-tinyvla-test", "tabletop", "tinyvla", config, needs_cuda=True, needs="a test GPU")
    monkeypatch.setitem(get_registry().presets, ("tabletop", "tinyvla"), preset)
    return preset


def test_the_pair_takes_its_preset_and_set_still_wins(tabletop_preset, capsys):
    main(["--env", "tabletop", "--policy", "tinyvla", "--dry-run", "--set", "train.lr=1.0e-4"])
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("preset: tabletop-tinyvla-test (")
    resolved = yaml.safe_load(out.split("\n", 1)[1].rsplit("config valid", 1)[0])
    assert resolved["pcm"]["budget"] == 7 and resolved["train"]["lr"] == 1.0e-4


def test_a_config_file_replaces_the_preset(tabletop_preset, capsys):
    main(["--config", str(ROOT / "configs" / "quickstart.yaml"), "--env", "tabletop", "--policy", "tinyvla", "--dry-run"])
    out = capsys.readouterr().out
    assert "preset:" not in out and "budget: 12" in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has a GPU")
def test_a_gpu_preset_without_a_gpu_is_two_lines(tabletop_preset, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["--env", "tabletop", "--policy", "tinyvla"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert stopped.value.code == 2 and len(lines) == 2
    assert lines[0] == "pcm-run: preset tabletop-tinyvla-test needs a test GPU; this machine has no CUDA GPU."


def test_libero_presets_are_registered_for_both_openvla_policies():
    presets = get_registry().presets
    for policy in ("openvla", "openvla-oft"):
        preset = presets[("libero", policy)]
        assert preset.needs_cuda and preset.config.is_file()
        data = yaml.safe_load(preset.config.read_text())
        assert data["env"]["name"] == "libero" and data["policy"]["name"] == policy
        assert data["policy"]["options"]["path"] and data["policy"]["options"]["unnorm_key"] and data["env"]["workers"] > 0


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_no_config_trains_token_logits_an_l1_checkpoint_never_trained(name):
    """The published OpenVLA-OFT LIBERO checkpoints were trained with the L1 head only: a config that
    reads their action tokens must teach them first (an SFT warm start) or not train at all."""
    data = yaml.safe_load((ROOT / "configs" / name).read_text())
    options = data.get("policy", {}).get("options", {})
    if "oft-finetuned" in str(options.get("path", "")):
        trains_tokens = options.get("action_head", "tokens") == "tokens"
        assert not trains_tokens or data.get("train", {}).get("sft", {}).get("enabled", True), name
