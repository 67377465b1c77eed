"""Pruning never discards the checkpoint just written; a failed build closes the env
workers; a signal stop calls ``pcm_on_run_end``; a tracking failure at the end never replaces the
run's own outcome; the ManiSkill and LIBERO backends close the simulators they no longer use."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest
import torch

import pcm_core
from pcm_core import checkpoint, runner
from pcm_core.checkpoint import Checkpoint
from pcm_core.cli import main
from pcm_core.config import ResolvedComponent, RunConfig, TrackingConfig
from pcm_core.registry import get_registry
from pcm_core.tracking import MLflowTracker
from pcm_tabletop.env import TabletopEnv, TabletopOptions

# --- checkpoint pruning --------------------------------------------------------------------------


def _checkpoint(step: int) -> Checkpoint:
    return Checkpoint(step, {"policy": {"w": torch.full((2,), float(step))}}, {"history": []}, {"train": {}})


def test_saving_after_resuming_from_an_older_step_keeps_the_new_checkpoint(tmp_path, caplog):
    for step in (10, 20):  # then the run was resumed from step 10
        checkpoint.save(tmp_path, _checkpoint(step), keep=5)
    with caplog.at_level(logging.WARNING, logger="pcm_core.checkpoint"):
        written = checkpoint.save(tmp_path, _checkpoint(11), keep=1)
    root = tmp_path / "checkpoints"
    assert written == root / "step_000011" and written.is_dir()
    assert (root / "latest").read_text().strip() == "step_000011"
    assert checkpoint.load(checkpoint.locate(str(tmp_path), tmp_path)).step == 11
    # step 10 is pruned; step 20 (the abandoned continuation) is left alone and named
    assert [p.name for p in checkpoint.list_checkpoints(root)] == ["step_000011", "step_000020"]
    (message,) = [r.getMessage() for r in caplog.records]
    assert "step_000020" in message and "abandoned" in message


def test_the_new_run_replaces_the_stale_checkpoint_when_it_reaches_its_step(tmp_path):
    for step in (10, 20, 11, 20):
        checkpoint.save(tmp_path, _checkpoint(step), keep=1)
    root = tmp_path / "checkpoints"
    assert [p.name for p in checkpoint.list_checkpoints(root)] == ["step_000020"]
    assert (root / "latest").read_text().strip() == "step_000020"


# --- runner: a failed build, a signal stop -------------------------------------------------------


class _BrokenPolicy:
    def __init__(self, options, **context) -> None:
        raise RuntimeError("policy weights are missing")


def _components(workers_env: ResolvedComponent) -> dict[str, ResolvedComponent]:
    broken = ResolvedComponent("policy", "broken", _BrokenPolicy, SimpleNamespace())
    return {"env": workers_env, "policy": broken}


def _worker_processes() -> list[multiprocessing.process.BaseProcess]:
    return [p for p in multiprocessing.active_children() if p.name.startswith("pcm-env-worker")]


def test_env_workers_end_when_the_policy_fails_to_build():
    env = ResolvedComponent("env", "tabletop", TabletopEnv, TabletopOptions(image_size=16, max_steps=24))
    config = RunConfig.model_validate({"env": {"workers": 2}, "train": {"tasks_per_step": 2, "group_size": 2}})
    try:
        runner.build(_components(env), config, torch.device("cpu"))
    except RuntimeError as exc:
        error = exc  # its traceback keeps build()'s frame, and so the env, alive (as in pcm-run)
    assert "policy weights are missing" in str(error)
    assert _worker_processes() == []


def test_in_process_env_is_closed_when_the_policy_fails_to_build():
    closed = []

    class Env:
        def __init__(self, options, num_envs, seed) -> None:
            pass

        def close(self) -> None:
            closed.append(True)

    env = ResolvedComponent("env", "fake", Env, SimpleNamespace())
    with pytest.raises(RuntimeError, match="policy weights are missing"):
        runner.build(_components(env), RunConfig(), torch.device("cpu"))
    assert closed == [True]


class _StopObserver:
    """Sends SIGINT after step 1 and records the run summary."""

    def __init__(self) -> None:
        self.summaries: list[dict] = []

    @pcm_core.hookimpl
    def pcm_on_step_end(self, step, metrics) -> None:
        if step == 1:
            os.kill(os.getpid(), signal.SIGINT)

    @pcm_core.hookimpl
    def pcm_on_run_end(self, summary) -> None:
        self.summaries.append(summary)


def test_signal_stop_calls_pcm_on_run_end(tmp_path, tiny_args):
    observer = _StopObserver()
    manager = get_registry().pm
    manager.register(observer)
    try:
        main([*tiny_args(tmp_path / "runs", "train.steps=3", "train.checkpoint_every=0")])
    finally:
        manager.unregister(observer)
    (summary,) = observer.summaries
    assert summary["stopped"] is True
    assert [row["step"] for row in summary["history"]] == [0, 1]


# --- tracking ------------------------------------------------------------------------------------


def test_failing_local_store_at_the_end_only_warns(tmp_path, monkeypatch):
    logged: list[str] = []
    tracker = MLflowTracker(MLflowTracker.Options(), TrackingConfig(), tmp_path, log=logged.append)
    tracker._mlflow, tracker.offline = object(), True  # a started run whose server is gone

    def broken_store(status: str) -> None:
        raise OSError("disk full\nsecond line")

    monkeypatch.setattr(tracker, "_write_local", broken_store)
    with pytest.raises(ValueError, match="the training error"):
        try:
            raise ValueError("the training error")
        except ValueError:
            tracker.end(status="FAILED")  # as the runner's crash path does, then re-raises
            raise
    assert logged == ["warning: metrics of this run were not tracked: the local MLflow store failed (OSError: disk full)"]


# --- simulators no longer used -------------------------------------------------------------------


class _FakeSim:
    """Stands in for one simulator: counts its closes."""

    def __init__(self, task) -> None:
        self.task = task
        self.closes = 0

    def reset(self, seed=None, options=None):
        return {"agent": {"qpos": np.zeros((1, 9), np.float32)}}, {}

    def close(self) -> None:
        self.closes += 1


@pytest.fixture
def fake_maniskill(monkeypatch):
    """``mani_skill.utils.registration`` with two CPU tasks, enough to build a ManiSkillEnv."""
    registration = ModuleType("mani_skill.utils.registration")
    registration.REGISTERED_ENVS = {t: SimpleNamespace(max_episode_steps=50) for t in ("PickCube-v1", "StackCube-v1")}
    for name, module in (("mani_skill", ModuleType("mani_skill")), ("mani_skill.utils", ModuleType("mani_skill.utils")),
                         ("mani_skill.utils.registration", registration)):
        monkeypatch.setitem(sys.modules, name, module)


def test_maniskill_closes_cpu_simulators_of_tasks_no_longer_assigned(fake_maniskill, monkeypatch):
    from pcm_maniskill.env import ManiSkillEnv, ManiSkillOptions

    options = ManiSkillOptions(tasks=["PickCube-v1", "StackCube-v1"], sim_backend="physx_cpu", image=False)
    env = ManiSkillEnv(options, num_envs=2)
    made: list[_FakeSim] = []
    monkeypatch.setattr(env, "_make", lambda task, count: made.append(_FakeSim(task)) or made[-1])
    env.reset([0, 1], [0, 0])
    first = list(made)
    env.reset([1, 1], [3, 4])  # slot 0 now runs StackCube: its PickCube scene goes
    assert [(s.task, s.closes) for s in first] == [("PickCube-v1", 1), ("StackCube-v1", 0)]
    assert sorted(env._sims) == [(0, "StackCube-v1"), (1, "StackCube-v1")]
    env.reset([1, 1], [5, 6])  # the same assignment reuses both
    assert len(made) == 3
    env.close()
    assert [s.closes for s in made] == [1, 1, 1]


def test_libero_assign_is_exception_safe(monkeypatch):
    import pcm_libero.env as libero_env

    monkeypatch.setattr(libero_env, "resolve_tasks", lambda suite, tasks: [0, 1, 2])
    options = libero_env.LiberoOptions.model_construct()  # defaults, without the install check
    env = libero_env.LiberoEnv(options, num_envs=2)
    made: list[_FakeSim] = []

    def build(task: int) -> _FakeSim:
        if task == 2:
            raise RuntimeError("MuJoCo could not load the scene")
        made.append(_FakeSim(task))
        return made[-1]

    monkeypatch.setattr(env, "_build", build)
    env._assign([0, 1])
    with pytest.raises(RuntimeError, match="could not load"):
        env._assign([0, 2])  # the simulator of task 1 is closed, task 2's build fails
    with pytest.raises(RuntimeError, match=r"call reset\(\) before step\(\)"):
        env.step(np.zeros((2, 7)))
    env.close()
    assert [(s.task, s.closes) for s in made] == [(0, 1), (1, 1)]
