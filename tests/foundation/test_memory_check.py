"""The rough memory estimate refuses runs that cannot fit, with the numbers, before anything is built."""

from __future__ import annotations

import pytest

from pcm_core.cli import main
from pcm_core.config import load_config, resolve_components
from pcm_core.memory import machine_memory_bytes, rollout_batch_bytes, training_state_bytes


def test_rollout_batch_estimate_counts_every_stored_observation():
    config = load_config(None, ["train.tasks_per_step=2", "train.group_size=3", "env.options.image_size=16",
                                "env.options.max_steps=40"])
    # 6 trajectories x 10 chunks (40 steps / K=4) x (16*16*3 image bytes + 256 bytes of vectors)
    assert rollout_batch_bytes(config, resolve_components(config)) == 6 * 10 * (16 * 16 * 3 + 256)


def test_parameter_estimate_is_within_a_third_of_the_built_model():
    from pcm_tinyvla.policy import TinyVLAPolicy

    components = resolve_components(load_config(None, []))
    built = sum(p.numel() for p in TinyVLAPolicy(components["policy"].options).module.parameters())
    assert training_state_bytes(components) == pytest.approx(16 * built, rel=1 / 3)


@pytest.mark.skipif((machine_memory_bytes() or 0) > 2**44, reason="a machine with more than 16 TiB fits this")
@pytest.mark.parametrize("sets, part", [
    (["train.tasks_per_step=100000", "train.group_size=1000"], "a step's observations for train.tasks_per_step=100000"),
    (["policy.options.hidden_size=65536", "policy.options.num_heads=1"], "the policy's weights, gradients and Adam"),
])
def test_a_run_that_cannot_fit_is_refused_in_two_lines(sets, part, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["--dry-run", *(arg for value in sets for arg in ("--set", value))])
    lines = capsys.readouterr().err.strip().splitlines()
    assert stopped.value.code == 2 and len(lines) == 2 and part in lines[0] and "GiB" in lines[0], lines
    assert lines[1].startswith("Fix: lower train.tasks_per_step")
