"""The embedded default environment: determinism, horizon, grasp rule, expert, gymnasium API."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from pcm_core.registry import get_registry
from pcm_tabletop import GYM_ID
from pcm_tabletop.env import NUM_VARIANTS, TabletopEnv, TabletopOptions
from pcm_tabletop.gym_env import TabletopGymEnv
from pcm_tabletop.render import render_scenes


def make(num_envs: int, seed: int = 0, **options) -> TabletopEnv:
    return TabletopEnv(TabletopOptions(**options), num_envs=num_envs, seed=seed)


def expert_success_rate(noise: float, episodes: int, **options) -> float:
    """Roll the scripted expert with action noise ``noise`` over tasks ``i % 6`` and layouts ``i``."""
    env = make(episodes, image_size=16, expert_noise=noise, **options)
    env.reset(np.arange(episodes) % env.num_tasks, np.arange(episodes))
    for _ in range(env.max_steps):
        result = env.step(env.expert_actions())
    return float(result.success.mean())


def step_until_expert_closes(env: TabletopEnv) -> np.ndarray:
    """Run the noiseless expert of a 1-env batch until its next action closes the gripper; return it."""
    for _ in range(env.max_steps):
        action = env.expert_actions()
        if action[0, 6] > 0:
            return action
        env.step(action)
    raise AssertionError("the expert never closed the gripper")


def test_registry_lists_tabletop():
    registration = get_registry().get("env", "tabletop")
    assert registration.cls is TabletopEnv
    assert registration.cls.Options is TabletopOptions


def test_observation_shapes_and_info_keys():
    env = make(3, image_size=32)
    obs, instructions = env.reset([0, 1, 5], [1, 2, 3])
    assert obs["image"].shape == (3, 32, 32, 3) and obs["image"].dtype == np.uint8
    assert obs["proprio"].shape == (3, 5) and obs["proprio"].dtype == np.float32
    assert obs["state"].shape == (3, 12) and obs["state"].dtype == np.float32
    np.testing.assert_allclose(obs["proprio"][0], [0.0, 0.0, 0.2, 0.0, -1.0], atol=1e-6)  # start (0, 0, 0.3), open
    assert instructions == [
        "put the red block on the green plate",
        "put the red block on the blue plate",
        "put the purple block on the blue plate",
    ]
    result = env.step(np.zeros((3, 7), dtype=np.float32))
    assert set(result.info) == {"gripper", "phase", "grasped", "failed_grasps", "toppled"}
    assert all(value.shape == (3,) for value in result.info.values())
    assert result.success.shape == result.done.shape == (3,)
    assert "state" not in make(2, state_obs=False).reset([0, 0], [0, 0])[0]


def test_same_task_and_init_state_give_identical_episodes_for_any_num_envs_and_seed():
    pairs = [(0, 11), (3, 12), (5, 13)]
    small = make(3, seed=0)
    obs_small, _ = small.reset([t for t, _ in pairs], [s for _, s in pairs])
    big = make(5, seed=99)
    obs_big, _ = big.reset([2, 5, 1, 0, 3], [40, 13, 41, 11, 12])
    order = [3, 4, 1]  # where each pair sits in the big batch
    for key in obs_small:
        np.testing.assert_array_equal(obs_small[key], obs_big[key][order])
    for _ in range(30):
        actions_small = small.expert_actions()
        actions_big = big.expert_actions()
        np.testing.assert_array_equal(actions_small, actions_big[order])
        result_small, result_big = small.step(actions_small), big.step(actions_big)
        for key in result_small.obs:
            np.testing.assert_array_equal(result_small.obs[key], result_big.obs[key][order])
    again, _ = make(3, seed=7).reset([0, 3, 5], [11, 12, 13])
    np.testing.assert_array_equal(again["image"], obs_small["image"])
    other, _ = make(1).reset([0], [14])
    assert not np.array_equal(other["image"][0], obs_small["image"][0])


def test_layout_depends_on_init_state_only():
    obs, _ = make(2).reset([0, 4], [21, 21])
    np.testing.assert_array_equal(obs["image"][0], obs["image"][1])
    assert not np.array_equal(obs["state"][0], obs["state"][1])  # another block and plate are named


def test_task_subset():
    env = make(2, tasks=[4])
    assert env.num_tasks == 1
    _, instructions = env.reset([0, 0], [0, 1])
    assert instructions == ["put the purple block on the green plate"] * 2
    with pytest.raises(ValueError):
        env.reset([1, 0], [0, 1])
    with pytest.raises(ValueError):
        TabletopOptions(tasks=[NUM_VARIANTS])


def expert_episodes(**options) -> tuple[TabletopEnv, np.ndarray, np.ndarray]:
    """4 expert episodes of 120 steps: the env and its ``success`` and ``done`` flags, each ``[T, B]``."""
    env = make(4, max_steps=120, image_size=16, **options)
    env.reset([0, 1, 2, 3], [5, 6, 7, 8])
    results = [env.step(env.expert_actions()) for _ in range(env.max_steps)]
    return env, np.array([r.success for r in results]), np.array([r.done for r in results])


def test_episode_ends_at_first_success():
    env, successes, dones = expert_episodes()
    assert successes[-1].all() and np.array_equal(dones, successes)  # done exactly from the first success on
    first = successes.argmax(axis=0)  # [B]
    assert len(set(first.tolist())) > 1 and first.max() < 119  # episodes of different lengths, none at the limit
    assert env.steps.tolist() == (first + 1).tolist()  # a done env takes no further steps


def test_fixed_horizon_and_latched_success():
    _, successes, dones = expert_episodes(end_on_success=False)
    assert not dones[:-1].any() and dones[-1].all()  # done exactly at the limit, not at success
    assert successes[-1].all() and successes[:40].sum() < successes.sum()
    first = successes.argmax(axis=0)
    assert all(successes[first[b]:, b].all() for b in range(4))  # once True, stays True


def test_actions_after_done_are_ignored():
    env = make(2, max_steps=8)
    env.reset([0, 1], [3, 4])
    for _ in range(8):
        last = env.step(np.tile([1.0, -1.0, -1.0, 0.0, 0.0, 1.0, 1.0], (2, 1)).astype(np.float32))
    assert last.done.all()
    after = env.step(np.random.default_rng(0).uniform(-1, 1, (2, 7)).astype(np.float32))
    for key in last.obs:
        np.testing.assert_array_equal(after.obs[key], last.obs[key])
    for key in last.info:
        np.testing.assert_array_equal(after.info[key], last.info[key])
    np.testing.assert_array_equal(after.success, last.success)
    assert after.done.all()


def test_only_running_envs_are_rendered_again():
    """Each chunk's image of every env equals a fresh render of its scene, although envs that
    finished keep their last image instead of being drawn again; and returned images are copies."""
    env = make(6, expert_noise=0.3)
    obs, _ = env.reset(np.arange(6) % env.num_tasks, np.arange(6))
    images = [obs["image"]]
    renders = {"rows": 0}
    original = env._scene

    def counting(index):
        renders["rows"] += len(index)
        return original(index)

    env._scene = counting
    for _ in range(env.max_steps):
        result = env.step(env.expert_actions())
        images.append(result.obs["image"])
        fresh = render_scenes(original(slice(None)), env.geometry, env.options.image_size)
        np.testing.assert_array_equal(images[-1], fresh)
    assert result.done.all() and renders["rows"] < 6 * (len(images) - 1)  # finished envs were not drawn again
    assert not np.shares_memory(images[-1], images[-2])


def test_noiseless_expert_succeeds():
    assert expert_success_rate(0.0, episodes=64) == 1.0


def test_noisy_expert_succeeds_partly():
    rate = expert_success_rate(0.5, episodes=128, miss="knock")  # docs/tabletop.md: 0.56 over 512
    assert 0.2 < rate < 0.7


def test_one_shot_expert_fails_mostly_by_toppling():
    """With miss='topple' most failures of the noisy expert are a toppled named block (the rest time out)."""
    env = make(128, image_size=16, expert_noise=0.5)
    env.reset(np.arange(128) % env.num_tasks, np.arange(128))
    for _ in range(env.max_steps):
        result = env.step(env.expert_actions())
    assert 0.1 < result.success.mean() < 0.9
    assert not (result.info["toppled"] & result.success).any()
    assert result.info["toppled"][~result.success].mean() > 0.8  # 0.87


@pytest.mark.parametrize("miss", ["topple", "knock"])
@pytest.mark.parametrize(
    ("yaw_offset", "xy_offset", "grasped"),
    [(0.0, 0.0, True), (0.12, 0.0, True), (0.18, 0.0, False), (-0.18, 0.0, False), (0.0, 0.04, False)],
)
def test_grasp_needs_alignment(yaw_offset, xy_offset, grasped, miss):
    env = make(1, max_rotation=0.3, miss=miss)  # tolerances: 0.15 rad, 0.03; 0.18 rad needs a faster turn
    env.reset([0], [2])
    action = step_until_expert_closes(env)
    block_before = env.obj_xy[0, env.task_obj[0]].copy()
    action[0, 0] = xy_offset / env.options.max_translation
    action[0, 5] = yaw_offset / env.options.max_rotation
    result = env.step(action)
    assert bool(result.info["grasped"][0]) is grasped
    assert result.info["gripper"][0] == 1.0
    assert result.info["failed_grasps"][0] == (0 if grasped else 1)
    moved = np.linalg.norm(env.obj_xy[0, env.task_obj[0]] - block_before)
    if not grasped and miss == "knock":  # a miss knocks the block away
        assert moved > 0.9 * env.options.miss_push
        assert result.info["phase"][0] in (0, 1)
    elif not grasped:  # a miss topples the block where it stands
        assert moved == 0.0 and result.info["toppled"][0]
        assert result.info["phase"][0] == 3
    else:
        assert result.info["phase"][0] == 2


def test_retry_after_a_miss_can_still_succeed():
    env = make(1, image_size=16, max_rotation=0.3, miss="knock")
    env.reset([3], [9])
    action = step_until_expert_closes(env)
    action[0, 5] = 1.0  # turn 0.3 rad: far outside the yaw tolerance (0.15)
    assert env.step(action).info["failed_grasps"][0] == 1
    for _ in range(env.max_steps):
        result = env.step(env.expert_actions())
    assert result.success[0] and result.info["failed_grasps"][0] == 1


def test_a_toppled_block_cannot_be_grasped_again():
    env = make(1, image_size=16, max_rotation=0.3)
    env.reset([3], [9])
    action = step_until_expert_closes(env)
    action[0, 5] = 1.0  # a miss
    env.step(action)
    env.closed[:] = False  # open in place and try again, perfectly aligned
    env.grip_yaw[:] = env.obj_yaw[0, env.task_obj[0]]
    env.grip_xyz[0, :2] = env.obj_xy[0, env.task_obj[0]]
    result = env.step(np.array([[0, 0, 0, 0, 0, 0, 1]], dtype=np.float32))
    assert not result.info["grasped"][0] and result.info["failed_grasps"][0] == 2
    for _ in range(env.max_steps):
        result = env.step(env.expert_actions())
    assert not result.success[0] and result.info["phase"][0] == 3


def test_expert_visits_phases_in_order():
    env = make(12, image_size=16)
    env.reset(np.arange(12) % env.num_tasks, np.arange(100, 112))
    phases = []
    for _ in range(env.max_steps):
        phases.append(env.step(env.expert_actions()).info["phase"])
    phases = np.array(phases)  # [T, B]
    for b in range(12):
        runs = [int(p) for i, p in enumerate(phases[:, b]) if i == 0 or p != phases[i - 1, b]]
        assert runs == [0, 1, 2]


def test_render_frame():
    env = make(2, render_size=96)
    env.reset([0, 1], [0, 1])
    frame = env.render(1)
    assert frame.shape == (96, 96, 3) and frame.dtype == np.uint8
    assert not np.array_equal(frame, env.render(0))


def test_gymnasium_wrapper_passes_env_checker():
    env = TabletopGymEnv(image_size=24, max_steps=32)
    check_env(env, skip_render_check=True)
    assert env.observation_space["image"].shape == (24, 24, 3)


def test_gymnasium_make_and_expert_episode():
    env = gymnasium.make(GYM_ID, image_size=16, render_mode="rgb_array")
    obs, info = env.reset(seed=3, options={"task_id": 2, "init_state": 17})
    assert info["instruction"] == "put the yellow block on the green plate"
    assert env.observation_space.contains(obs)
    total, terminated, truncated, steps = 0.0, False, False, 0
    while not (terminated or truncated):
        obs, reward, terminated, truncated, info = env.step(env.unwrapped.expert_action())
        total += reward
        steps += 1
    assert terminated and not truncated and info["success"] and total == 1.0 and steps < 256  # ends at the drop
    assert env.render().shape == (128, 128, 3)


def test_reset_rejects_wrong_counts_and_unknown_tasks():
    env = make(2, image_size=16, tasks=[0, 3])
    with pytest.raises(ValueError, match="reset needs 2 task ids and 2 initial states"):
        env.reset([0], [1, 2])
    with pytest.raises(ValueError, match=r"task ids must be in 0\.\.1"):
        env.reset([0, 2], [1, 2])
    with pytest.raises(ValueError, match="initial states must be non-negative"):
        env.reset([0, 1], [1, -2])
