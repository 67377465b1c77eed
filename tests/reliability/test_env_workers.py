"""Env workers: the subprocess vector env is the in-process env, and a worker that dies costs only
its trajectories of that step (killed by pid, segfault), while a worker that cannot be built
stops the run with one clear error."""

from __future__ import annotations

import math
import os
import signal
import zlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from crashing_env import CrashingEnv, CrashingOptions
from rich.console import Console

from pcm_core import checkpoint, runner
from pcm_core.collectors import draw_groups
from pcm_core.config import ResolvedComponent, load_config, resolve_components
from pcm_core.rollout import GroupSpec, collect, concat, drop_lost
from pcm_core.types import ActionSpec, PolicyOutput, RolloutBatch
from pcm_core.vector_env import EnvWorkerError, SubprocessEnv
from pcm_tabletop.env import TabletopEnv, TabletopOptions

OPTIONS = {"image_size": 16, "max_steps": 24}


def tabletop(**options) -> ResolvedComponent:
    return ResolvedComponent("env", "tabletop", TabletopEnv, TabletopOptions(**{**OPTIONS, **options}))


class ScriptedPolicy:
    """Uniform random chunks drawn from the call count and each env's own proprioception (the
    same in every run, whichever envs share the call); calls ``on_act(n)`` before its n-th chunk."""

    action_spec = ActionSpec(chunk_size=4)
    device = torch.device("cpu")

    def __init__(self, on_act=None):
        self.calls = 0
        self.on_act = on_act

    def act(self, obs, instructions, generator=None, greedy=False) -> PolicyOutput:
        self.calls += 1
        if self.on_act is not None:
            self.on_act(self.calls)
        b = len(instructions)
        seeds = [zlib.crc32(row.numpy().tobytes(), self.calls) for row in obs["proprio"]]
        actions = torch.stack([torch.rand(4, 7, generator=torch.Generator().manual_seed(seed)) for seed in seeds]) * 2 - 1
        return PolicyOutput(actions, torch.zeros(b, 4, dtype=torch.long), torch.zeros(b, 4), torch.zeros(b))


@pytest.fixture
def workers():
    """``workers(component, num_envs, count)``: a SubprocessEnv, closed after the test."""
    made = []

    def make(component, num_envs, count, seed=0):
        made.append(SubprocessEnv(component, num_envs, seed=seed, workers=count))
        return made[-1]

    yield make
    for env in made:
        env.close()


def assert_same_arrays(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_workers_give_the_in_process_env(workers):
    local = TabletopEnv(TabletopOptions(image_size=16, max_steps=80), num_envs=5)
    remote = workers(ResolvedComponent("env", "tabletop", TabletopEnv, local.options), 5, 2)  # 3 + 2 envs
    assert (remote.num_tasks, remote.max_steps) == (6, 80)
    starts = ([0, 1, 2, 3, 4], [11, 12, 13, 14, 15])
    obs, text = local.reset(*starts)
    remote_obs, remote_text = remote.reset(*starts)
    assert remote_text == text and text[1] == "put the red block on the blue plate"
    assert_same_arrays(remote_obs, obs)
    for _ in range(80):
        action = local.expert_actions()
        np.testing.assert_array_equal(remote.expert_actions(), action)
        expected, got = local.step(action), remote.step(action)
        assert_same_arrays(got.obs, expected.obs)
        assert_same_arrays(got.info, expected.info)
        np.testing.assert_array_equal(got.success, expected.success)
        np.testing.assert_array_equal(got.done, expected.done)
        assert not got.lost.any()
    assert expected.success.sum() >= 2 and expected.done.all()  # the expert solved some: successes compared too
    np.testing.assert_array_equal(remote.render(3), local.render(3))
    assert remote.restarts == 0


def test_drop_lost_keeps_groups_with_two_survivors():
    n, t = 9, 2
    batch = RolloutBatch(
        obs={"proprio": torch.arange(n, dtype=torch.float32)[:, None, None].expand(n, t, 1)},
        instructions=[f"i{k}" for k in range(n)],
        actions=torch.zeros(n, t, 4, 7), tokens=torch.zeros(n, t, 4, dtype=torch.long),
        old_logprobs=torch.zeros(n, t, 4), entropy=torch.zeros(n, t), lengths=torch.full((n,), t),
        rewards=torch.tensor([1.0, 0, 1, 0, 1, 0, 1, 1, 0]), group_index=torch.arange(n) // 3, horizon=5,
    )
    lost = np.array([0, 0, 1, 1, 1, 0, 0, 0, 0], dtype=bool)  # group 1 keeps one member: dropped whole
    kept = drop_lost(batch, lost)
    assert kept.instructions == ["i0", "i1", "i6", "i7", "i8"]
    assert kept.group_index.tolist() == [0, 0, 2, 2, 2]
    assert kept.rewards.tolist() == [1.0, 0.0, 1.0, 1.0, 0.0]
    assert kept.dropped == 4
    assert drop_lost(batch, lost, min_members=1).dropped == 3
    assert kept.horizon == concat([kept, kept]).horizon == 5  # the episode horizon survives, unlike the padding


def test_worker_killed_by_pid_mid_rollout(workers, caplog):
    """Acceptance (issue 7): kill -9 one env worker during the third chunk of a rollout."""
    groups = [GroupSpec(0, 5), GroupSpec(3, 6)]  # 2 groups of 3 trajectories
    reference = TabletopEnv(TabletopOptions(**OPTIONS), num_envs=6)
    expected_policy = ScriptedPolicy()
    expected = [collect(reference, expected_policy, groups, 3) for _ in range(2)]

    env = workers(tabletop(), 6, 3)  # worker 1 holds envs 2 and 3: one member of each group
    before = env.worker_pids
    policy = ScriptedPolicy(on_act=lambda n: os.kill(before[1], signal.SIGKILL) if n == 3 else None)
    batch = collect(env, policy, groups, 3)

    assert env.restarts == 1
    assert [r.getMessage() for r in caplog.records] == [
        "env worker 1 (env 'tabletop', envs 2..3) was killed by SIGKILL while running step_chunk; "
        "restarting it, its envs' episodes are lost"
    ]
    assert batch.dropped == 2 and batch.group_index.tolist() == [0, 0, 1, 1]
    assert batch.horizon == math.ceil(reference.max_steps / 4)
    survivors = expected[0].select_trajectories(torch.tensor([0, 1, 4, 5]))
    assert batch.instructions == survivors.instructions
    for key, value in survivors.obs.items():
        assert torch.equal(batch.obs[key], value), key  # the other workers' trajectories are untouched
    assert torch.equal(batch.lengths, survivors.lengths) and torch.equal(batch.rewards, survivors.rewards)
    after = env.worker_pids
    assert after[1] != before[1] and after[0] == before[0] and after[2] == before[2]

    again = collect(env, policy, groups, 3)  # the restarted worker plays its part again
    assert again.num_trajectories == 6 and again.dropped == 0 and env.restarts == 1
    for key, value in expected[1].obs.items():
        assert torch.equal(again.obs[key], value), key
    assert env.worker_pids == after


def test_unimportable_env_is_one_clear_error():
    ghost = type("GhostEnv", (), {"__module__": "pcm_no_such_backend", "Options": TabletopOptions})
    with pytest.raises(EnvWorkerError) as info:
        SubprocessEnv(ResolvedComponent("env", "ghost", ghost, TabletopOptions()), 4, workers=2)
    lines = str(info.value).splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("env worker 0 (env 'ghost', envs 0..1) cannot build its env: ")
    assert lines[0].endswith("ModuleNotFoundError: No module named 'pcm_no_such_backend'")
    assert "python -c 'import pcm_no_such_backend'" in lines[1]


def test_worker_that_keeps_crashing_stops_the_run():
    component = ResolvedComponent("env", "crashing", CrashingEnv, CrashingOptions(crash_on_build=True))
    with pytest.raises(EnvWorkerError) as info:
        SubprocessEnv(component, 2, workers=1)
    first, second = str(info.value).splitlines()
    assert first == (
        "env worker 0 (env 'crashing', envs 0..1) died 3 times in a row; "
        "last it was killed by SIGSEGV while building its env."
    )
    assert second.startswith("Fix: ")


def test_run_with_a_segfaulting_worker(tmp_path, tiny_args):
    """pcm-run's loop with env.workers=2: a segfault in step 1 costs that step one group, the
    counters reach the metrics and the checkpoint, and resuming continues them exactly."""
    sets = tiny_args(tmp_path, "env.workers=2", "train.steps=2", "train.checkpoint_every=1", "env.options.max_steps=16")
    config = load_config(overrides=sets[1::2])
    (doomed,) = draw_groups(np.random.default_rng(config.train.seed), SimpleNamespace(num_tasks=6), 2)[1:]
    components = resolve_components(config)
    options = CrashingOptions(**config.env.options, crash_init_state=doomed.init_state)
    components["env"] = ResolvedComponent("env", "crashing", CrashingEnv, options)  # worker 1 holds group 1

    result = runner.train(config, components, console=Console(quiet=True))
    step1, step2 = result.history[1], result.history[2]
    assert (step1["faults/env_restarts"], step1["faults/dropped_trajectories"]) == (1.0, 2.0)
    assert (step2["faults/env_restarts"], step2["faults/dropped_trajectories"]) == (1.0, 0.0)
    saved = checkpoint.load(result.run_dir / "checkpoints" / "step_000001")
    assert saved.state["faults"]["env_restarts"] == 1

    resumed = runner.train(config, components, console=Console(quiet=True), resume=saved)
    exact = [{k: v for k, v in row.items() if not k.startswith("time/")} for row in (step2, resumed.history[2])]
    assert exact[0] == exact[1]
