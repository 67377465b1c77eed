"""Inputs the algorithm core must refuse or survive: bad phase scores, integer rewards, a uniform
draw of exactly 0, and env-unit actions that the rollout must store on the [-1, 1] scale."""

from __future__ import annotations

import pytest
import torch

from pcm_core.algo.grpo import uniform_groups
from pcm_core.algo.pcm import KeepProbabilities
from pcm_core.categorical import sample_tokens
from pcm_core.rollout import GroupSpec, collect
from pcm_core.types import ActionSpec, PhaseScores, PolicyOutput
from pcm_tabletop.env import TabletopEnv, TabletopOptions


@pytest.mark.parametrize("total", [[-1.0, 2.0, 1.0], [float("nan"), 1.0, 1.0], [float("inf"), 1.0, 1.0]])
def test_negative_or_non_finite_phase_scores_are_refused(total):
    keep = KeepProbabilities(3)
    with pytest.raises(ValueError, match=r"finite and >= 0.*\n.*Fix: "):
        keep.update(PhaseScores(total=torch.tensor(total), count=torch.ones(3, dtype=torch.long)))
    assert keep.q.tolist() == pytest.approx([1 / 3] * 3)  # unchanged


def test_uniform_groups_takes_integer_rewards():
    rewards = torch.tensor([1, 1, 0, 1, 0, 0])
    groups = torch.tensor([0, 0, 1, 1, 2, 2])
    assert uniform_groups(rewards, groups).tolist() == [True, False, True]


def test_a_zero_uniform_never_draws_a_zero_probability_token(monkeypatch):
    """``torch.rand`` may return exactly 0; the token must still have a positive probability."""
    log_p = torch.tensor([[[0.0, 0.5, 0.5]]]).log()  # [1, 1, 3]: token 0 impossible
    real_rand = torch.rand
    monkeypatch.setattr(torch, "rand", lambda *args, **kwargs: torch.zeros_like(real_rand(*args, **kwargs)))
    assert sample_tokens(log_p, torch.Generator().manual_seed(0)).tolist() == [[1]]


class TwiceScaledPolicy:
    """Acts with env actions twice its [-1, 1] values, as a policy that un-normalises would."""

    action_spec = ActionSpec(chunk_size=4)
    device = torch.device("cpu")

    def act(self, obs, instructions, generator=None, greedy=False) -> PolicyOutput:
        b = len(instructions)
        values = torch.linspace(-1, 1, 28).reshape(1, 4, 7).repeat(b, 1, 1)  # [B, 4, 7]
        return PolicyOutput(
            actions=2.0 * values, tokens=torch.zeros(b, 4, dtype=torch.long), logprobs=torch.zeros(b, 4),
            entropy=torch.zeros(b), normalized_actions=values,
        )


def test_rollout_stores_the_normalised_actions_and_executes_the_env_ones(monkeypatch):
    env = TabletopEnv(TabletopOptions(image_size=16, max_steps=8), num_envs=2, seed=0)
    executed = []
    step_chunk = env.step_chunk
    monkeypatch.setattr(env, "step_chunk", lambda actions: executed.append(actions) or step_chunk(actions))
    batch = collect(env, TwiceScaledPolicy(), [GroupSpec(0, 0)], group_size=2)
    values = torch.linspace(-1, 1, 28).reshape(4, 7)
    real = batch.chunk_mask  # [N, T]
    assert torch.equal(batch.actions[real], values.expand(int(real.sum()), 4, 7))  # what the proxies read
    assert torch.equal(torch.as_tensor(executed[0][0]), 2.0 * values)  # what the env got
