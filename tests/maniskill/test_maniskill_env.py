"""The ManiSkill3 backend on CPU (physx_cpu): tasks, seeding, a scripted success reaching the
learner, `pcm-run` end to end, missing assets and a missing Vulkan driver.

Needs the [maniskill] extra and a Vulkan driver SAPIEN accepts (plugins/pcm_maniskill/install_vulkan.sh).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from pcm_core.algo.grpo import group_advantages
from pcm_core.cli import main
from pcm_core.interfaces import PolicyBackend
from pcm_core.rollout import GroupSpec, collect
from pcm_core.types import ActionSpec, PolicyOutput
from pcm_maniskill.env import ManiSkillEnv, ManiSkillOptions, seeded_batch_reset
from pcm_maniskill.tasks import INSTRUCTIONS, TASK_ASSETS

pytestmark = pytest.mark.maniskill

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("task", ["PickCube-v1", "PushCube-v1", "StackCube-v1"])
def test_task_resets_and_steps_with_rgb(task):
    env = ManiSkillEnv(ManiSkillOptions(tasks=[task], image_size=64, sim_backend="physx_cpu"), num_envs=1)
    try:
        obs, instructions = env.reset([0], [3])
        assert instructions == [INSTRUCTIONS[task]]
        assert env.max_steps == 50
        assert obs["image"].shape == (1, 64, 64, 3) and obs["image"].dtype == np.uint8
        assert obs["proprio"].shape == (1, 9) and obs["proprio"].dtype == np.float32  # Panda: 7 joints + 2 fingers
        assert obs["image"].std() > 10  # a rendered scene, not a blank frame
        for _ in range(2):
            result = env.step(np.zeros((1, 7), dtype=np.float32))
        assert result.obs["image"].shape == (1, 64, 64, 3)
        assert result.success.tolist() == [False] and result.done.tolist() == [False]
        assert result.info["gripper"].tolist() == [0.0]  # a[6] = 0 is "open"
        assert result.info["phase"].tolist() == [0]
    finally:
        env.close()


@pytest.fixture(scope="module")
def pick_env():
    env = ManiSkillEnv(
        ManiSkillOptions(tasks=["PickCube-v1"], image_size=64, state_obs=True, sim_backend="physx_cpu"), num_envs=3
    )
    yield env
    env.close()


def test_same_seed_same_observations(pick_env):
    obs, _ = pick_env.reset([0, 0, 0], [7, 7, 8])
    assert np.array_equal(obs["image"][0], obs["image"][1])
    assert np.array_equal(obs["state"][0], obs["state"][1])
    assert not np.array_equal(obs["state"][0], obs["state"][2])  # another seed, another goal
    action = np.tile(np.array([0.5, -0.5, 0.2, 0, 0, 0.3, 1.0], dtype=np.float32), (3, 1))
    after = [pick_env.step(action) for _ in range(2)][-1].obs
    again, _ = pick_env.reset([0, 0, 0], [8, 7, 7])  # the same seeds on other slots
    assert np.array_equal(again["image"][1], obs["image"][0])
    assert np.array_equal(again["image"][0], obs["image"][2])
    replay = [pick_env.step(action) for _ in range(2)][-1].obs
    assert np.array_equal(replay["image"][1], after["image"][0])
    assert np.array_equal(replay["proprio"][2], after["proprio"][1])


def test_batch_reset_copies_the_seeded_state(pick_env):
    """The GPU reset path (partial seeded reset, then a state copy) on a one-env CPU batch."""
    obs, _ = pick_env.reset([0, 0, 0], [11, 11, 11])
    sim = pick_env._sim(0, "PickCube-v1")
    raw = seeded_batch_reset(sim, [11])
    assert np.array_equal(pick_env._convert(raw)["state"], obs["state"][:1])


class ScriptedPolicy(PolicyBackend):
    """Env 0 of every group runs the env's expert; the others hold still with the gripper open."""

    def __init__(self, env: ManiSkillEnv) -> None:
        self.env = env
        self._module = torch.nn.Linear(1, 1)

    @property
    def module(self):
        return self._module

    @property
    def action_spec(self):
        return ActionSpec(chunk_size=1, action_dim=7)

    @property
    def tokens_per_chunk(self):
        return 7

    def act(self, obs, instructions, generator=None, greedy=False):
        actions = torch.as_tensor(self.env.expert_actions())  # [B, 7], every env
        actions[1:] = torch.tensor([0, 0, 0, 0, 0, 0, -1.0])
        # the rollout asks only about envs still running; only env 0 ends early (solved), so a
        # shorter batch is envs 1.. (they hold still to the time limit)
        batch = len(instructions)
        actions = actions[actions.shape[0] - batch :]
        return PolicyOutput(
            actions=actions[:, None], tokens=torch.zeros(batch, 7, dtype=torch.long),
            logprobs=torch.zeros(batch, 7), entropy=torch.zeros(batch),
        )

    def log_probs(self, obs, instructions, tokens):
        raise NotImplementedError

    def actions_to_tokens(self, actions):
        raise NotImplementedError

    def save(self, path):
        raise NotImplementedError


def test_scripted_success_reaches_the_learner_as_reward_one(pick_env):
    batch = collect(pick_env, ScriptedPolicy(pick_env), [GroupSpec(task_id=0, init_state=5)], group_size=3)
    assert batch.rewards.tolist() == [1.0, 0.0, 0.0]
    assert batch.lengths[1:].tolist() == [50, 50]  # held still to the time limit
    assert batch.lengths[0] < 50  # solved and done early
    phases = batch.info["phase"][0, : batch.lengths[0]].tolist()
    assert phases[0] == 0 and 1 in phases and phases[-1] == 3  # reach, hold, solved
    assert batch.info["gripper"][0, : batch.lengths[0]].max() == 1.0
    advantages = group_advantages(batch.rewards, batch.group_index)
    expected = torch.tensor([2 / 3, -1 / 3, -1 / 3]) / torch.tensor([1.0, 0, 0]).std()
    assert torch.allclose(advantages, expected, atol=1e-5)


def test_pcm_run_two_steps_logs_to_mlflow(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    main([
        "--config", os.path.join(ROOT, "configs", "maniskill_tinyvla.yaml"),
        "--env", "maniskill", "--policy", "tinyvla",
        "--set", "train.steps=2",
        "--set", "train.tasks_per_step=1",
        "--set", "train.group_size=2",
        "--set", "env.workers=2",  # the two members of the group in two processes
        "--set", "train.eval_episodes=2",
        "--set", "train.eval_every=0",
        "--set", "train.sft.enabled=false",
        "--set", "env.options.max_steps=8",
        "--set", "pcm.budget=1",
        "--set", f"train.output_dir={tmp_path / 'runs'}",
        "--set", f"tracking.uri={uri}",
    ])
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs(client.get_experiment_by_name("pcm-vla").experiment_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["env.name"] == "maniskill"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "kept_chunk_fraction")] == [1, 2]
    assert run.data.metrics["kept_chunk_fraction"] == pytest.approx(1 / 2)  # 8 steps = 2 chunks of 4, budget 1


def _pcm_run(args: list[str], env: dict[str, str], timeout: int) -> subprocess.CompletedProcess:
    code = "import sys; from pcm_core.cli import main; main(sys.argv[1:])"
    return subprocess.run(
        [sys.executable, "-c", code, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=timeout, env={**os.environ, **env},
    )


def test_ycb_task_fails_with_the_missing_asset_without_a_prompt(tmp_path):
    proc = _pcm_run(
        ["--env", "maniskill", "--set", "env.options.tasks=[PickSingleYCB-v1]", "--set", "train.steps=1"],
        {"MS_ASSET_DIR": str(tmp_path)}, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"pcm-run: ManiSkill task 'PickSingleYCB-v1' needs asset(s) ycb, not found in {tmp_path / 'data'}.",
        "Fix: python -m mani_skill.utils.download_asset PickSingleYCB-v1   (or point MS_ASSET_DIR at a copy)",
    ]


def test_missing_vulkan_driver_is_one_clear_error(tmp_path):
    proc = _pcm_run(
        ["--env", "maniskill", "--set", "train.steps=1", "--set", f"train.output_dir={tmp_path}",
         "--set", "tracking.enabled=false", "--set", "train.sft.enabled=false"],
        {"VK_ICD_FILENAMES": str(tmp_path / "no_driver.json")}, timeout=300,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith(("pcm-run:", "Fix:"))]
    assert lines[0].startswith("pcm-run: SAPIEN (ManiSkill's simulator) found no usable Vulkan device")
    assert lines[1] == "Fix: on Debian 12 run plugins/pcm_maniskill/install_vulkan.sh as root; elsewhere see docs/maniskill.md"


def test_asset_table_matches_maniskill():
    from mani_skill import ASSET_DIR
    from mani_skill.utils import assets
    from mani_skill.utils.registration import REGISTERED_ENVS

    declared = {uid: spec.asset_download_ids for uid, spec in REGISTERED_ENVS.items() if spec.asset_download_ids}
    assert {uid: [a for a, _ in table] for uid, table in TASK_ASSETS.items()} == declared
    for table in TASK_ASSETS.values():
        for asset, folder in table:
            sources = assets.expand_data_group_into_individual_data_source_ids(asset) if asset in assets.DATA_GROUPS else [asset]
            paths = [Path(assets.DATA_SOURCES[s].output_dir) / assets.DATA_SOURCES[s].target_path for s in sources]
            assert all(path.is_relative_to(ASSET_DIR / folder) for path in paths), asset


def test_throughput_benchmark_writes_outputs(tmp_path):
    import json

    from benchmarks.__main__ import main as benchmarks_main

    assert benchmarks_main(["maniskill_env_throughput", "--quick", "--tiny", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "maniskill_env_throughput.json").read_text())
    assert list(result["summary"]) == ["cpu/state/workers=0"]
    assert result["summary"]["cpu/state/workers=0"]["n"] == 1
    markdown = (tmp_path / "maniskill_env_throughput.md").read_text()
    assert ("not run (--device cpu or --tiny)" if result["gpu"] else "not measured: no GPU on this machine") in markdown
    assert (tmp_path / "maniskill_env_throughput.png").read_bytes()[:4] == b"\x89PNG"
