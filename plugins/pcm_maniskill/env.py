"""ManiSkill3 tasks behind the :class:`~pcm_core.interfaces.EnvBackend` interface.

Simulation: ``sim_backend="physx_cuda"`` runs all ``num_envs`` envs as one GPU-parallel ManiSkill
env (one task); ``"physx_cpu"`` runs one single-env ManiSkill env per batch slot in this process,
stepped one after another (``env.workers`` spreads slots over processes). Initial state
``init_states[b]`` is ManiSkill's episode seed: the same seed gives the same scene on CPU; on GPU
each distinct seed is drawn once and copied to every env that asks for it.

Actions ``[B, 7]`` in ``[-1, 1]`` go to ManiSkill's ``pd_ee_delta_pose`` controller unchanged for
dims 0..5 (end-effector translation, 0.1 m per unit, and axis-angle rotation, 0.1 rad per unit, in
the robot-base frame); the gripper dim is binarised and its sign flipped, because ManiSkill's
gripper action is a normalised finger-position target (+1 open, -1 closed): ours closes when
``a[6] > 0``.
"""

from __future__ import annotations

import difflib
from typing import Any, Literal, Sequence

import numpy as np
from pydantic import Field, model_validator

from pcm_core.errors import ConfigError, PcmError
from pcm_core.interfaces import EnvBackend, Options, StepResult
from pcm_maniskill import tasks as task_table
from pcm_maniskill.expert import EXPERT_TASKS, pick_cube_actions

CONTROL_MODE = "pd_ee_delta_pose"
VULKAN_MARKERS = ("vk::", "vulkan", "physical device")


class MissingAssetsError(ConfigError):
    """A task's downloadable assets are not on disk."""


class VulkanUnavailableError(PcmError):
    """SAPIEN found no Vulkan device it can use."""


class ManiSkillOptions(Options):
    tasks: list[str] = Field(
        default_factory=lambda: ["PickCube-v1"], min_length=1, description="ManiSkill task ids; task id i runs the i-th"
    )
    instructions: dict[str, str] = Field(
        default_factory=dict, description="task id -> language instruction (replaces the built-in one)"
    )
    sim_backend: Literal["auto", "physx_cpu", "physx_cuda"] = Field(
        "auto", description="auto: physx_cuda when torch sees a GPU, else physx_cpu"
    )
    image: bool = Field(True, description="render obs['image'] from the camera (off: state only, much faster on CPU)")
    camera: str = Field("base_camera", description="which of the task's cameras gives obs['image']")
    image_size: int = Field(128, ge=16, le=1024, description="side of the square camera image in pixels")
    state_obs: bool = Field(
        False, description="add obs['state']: the task's extra observations (goal, TCP pose, ...), zero-padded"
    )
    state_dim: int = Field(32, gt=0, description="width obs['state'] is zero-padded to")
    max_steps: int | None = Field(None, gt=0, description="episode limit in env steps (None: the task's own, 50 for PickCube)")
    end_on_success: bool = Field(True, description="an episode is done as soon as the task is solved")

    @model_validator(mode="after")
    def _check_tasks(self) -> "ManiSkillOptions":
        known = {**task_table.INSTRUCTIONS, **self.instructions}
        for task in self.tasks:
            if task not in known:
                close = difflib.get_close_matches(task, list(known), n=1)
                hint = f"did you mean '{close[0]}'? Otherwise s" if close else "S"
                raise ConfigError(
                    f"env.options.tasks: ManiSkill task '{task}' has no language instruction.\n"
                    f"Fix: {hint}et env.options.instructions.{task} to one"
                )
            missing = task_table.missing_assets(task)
            if missing:
                raise MissingAssetsError(
                    f"ManiSkill task '{task}' needs asset(s) {', '.join(missing)}, not found in {task_table.asset_dir()}.\n"
                    f"Fix: python -m mani_skill.utils.download_asset {task}   (or point MS_ASSET_DIR at a copy)"
                )
        if self.sim_backend == "physx_cuda" and len(set(self.tasks)) > 1:
            raise ConfigError(
                f"env.options.tasks: physx_cuda runs one task per env batch, got {len(set(self.tasks))}.\n"
                "Fix: name one task, or set env.options.sim_backend to physx_cpu"
            )
        return self


def _to_numpy(value: Any) -> np.ndarray:
    """A ManiSkill tensor (any device) or array as a numpy array."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


class ManiSkillEnv(EnvBackend):
    """``num_envs`` ManiSkill3 episodes stepped together (see the module docstring).

    Observations (each ``[B, ...]``):
        ``image`` (with ``image``): uint8 ``[B, H, W, 3]`` from ``camera``, ``H = W = image_size``.
        ``proprio``: float32 ``[B, Q]`` robot joint positions (Panda: 7 arm joints + 2 fingers).
        ``state`` (with ``state_obs``): float32 ``[B, state_dim]`` the task's extra observations
            (PickCube: is_grasped, TCP pose, goal position; without ``image`` also object poses).
    Info (each ``[B]``): ``gripper`` float32 (1 closed, 0 open: the last gripper command),
    ``grasped`` bool (ManiSkill's ``is_grasped``; False for tasks without it) and ``phase`` int64:
    0 reach (nothing grasped yet), 1 holding, 2 released or dropped, 3 solved.
    """

    Options = ManiSkillOptions
    requires = ("mani_skill", "sapien")
    extra = "maniskill"

    def __init__(self, options: ManiSkillOptions, num_envs: int, seed: int = 0) -> None:
        super().__init__(options, num_envs, seed)
        self.options: ManiSkillOptions = options
        import torch
        from mani_skill.utils.registration import REGISTERED_ENVS

        for task in options.tasks:
            if task not in REGISTERED_ENVS:
                close = difflib.get_close_matches(task, list(REGISTERED_ENVS), n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                raise ConfigError(f"'{task}' is not a ManiSkill task.\nFix: {hint}ManiSkill tasks are listed in docs/maniskill.md")
        backend = options.sim_backend
        if backend == "auto":
            backend = "physx_cuda" if torch.cuda.is_available() else "physx_cpu"
        if backend == "physx_cuda" and len(set(options.tasks)) > 1:
            raise ConfigError(
                f"env.options.tasks: physx_cuda (picked by sim_backend auto) runs one task per env batch, got {len(set(options.tasks))}.\n"
                "Fix: name one task, or set env.options.sim_backend to physx_cpu"
            )
        self.sim_backend = backend
        self.instructions = {**task_table.INSTRUCTIONS, **options.instructions}
        limits = [REGISTERED_ENVS[t].max_episode_steps or 50 for t in options.tasks]
        self._max_steps = options.max_steps or max(limits)
        self._sims: dict[tuple[int, str], Any] = {}  # (first slot, task) -> gymnasium env
        self._task_of_slot: list[str | None] = [None] * num_envs
        self._started = False

    @property
    def num_tasks(self) -> int:
        return len(self.options.tasks)

    @property
    def max_steps(self) -> int:
        return self._max_steps

    def _make(self, task: str, count: int) -> Any:
        """A ManiSkill env running ``count`` parallel copies of ``task``."""
        import gymnasium as gym
        import mani_skill.envs  # noqa: F401  (registers the tasks with gymnasium)

        opt = self.options
        kwargs: dict[str, Any] = {
            "num_envs": count,
            "obs_mode": "rgb" if opt.image else "state_dict",
            "control_mode": CONTROL_MODE,
            "sim_backend": self.sim_backend,
            "max_episode_steps": self._max_steps,
        }
        if opt.image:
            kwargs["sensor_configs"] = {"width": opt.image_size, "height": opt.image_size}
        try:
            return gym.make(task, **kwargs)
        except RuntimeError as exc:
            if any(marker in str(exc).lower() for marker in VULKAN_MARKERS):
                raise VulkanUnavailableError(
                    f"SAPIEN (ManiSkill's simulator) found no usable Vulkan device ({exc}).\n"
                    "Fix: on Debian 12 run plugins/pcm_maniskill/install_vulkan.sh as root; elsewhere see docs/maniskill.md"
                ) from None
            raise

    def _key(self, slot: int, task: str) -> tuple[int, str]:
        """Which env serves ``slot`` running ``task``: one per slot and task on CPU, one for all slots on GPU."""
        return (0, task) if self.sim_backend == "physx_cuda" else (slot, task)

    def _sim(self, slot: int, task: str) -> Any:
        """The env serving ``slot`` (see :meth:`_key`), made on first use."""
        key = self._key(slot, task)
        if key not in self._sims:
            count = self.num_envs if self.sim_backend == "physx_cuda" else 1
            self._sims[key] = self._make(task, count)
        return self._sims[key]

    def _convert(self, raw: dict[str, Any]) -> dict[str, np.ndarray]:
        """ManiSkill observations (batch ``n``) -> this backend's arrays (each ``[n, ...]``)."""
        opt = self.options
        obs: dict[str, np.ndarray] = {}
        if opt.image:
            cameras = raw["sensor_data"]
            if opt.camera not in cameras:
                raise ConfigError(
                    f"env.options.camera = '{opt.camera}' is not a camera of this task.\n"
                    f"Fix: set it to one of {', '.join(sorted(cameras))}"
                )
            obs["image"] = _to_numpy(cameras[opt.camera]["rgb"]).astype(np.uint8)
        qpos = _to_numpy(raw["agent"]["qpos"])
        obs["proprio"] = qpos.reshape(qpos.shape[0], -1).astype(np.float32)
        if opt.state_obs:
            parts = [_to_numpy(v).reshape(qpos.shape[0], -1).astype(np.float32) for v in raw["extra"].values()]
            state = np.concatenate(parts, axis=1) if parts else np.zeros((qpos.shape[0], 0), np.float32)
            if state.shape[1] > opt.state_dim:
                raise ConfigError(
                    f"env.options.state_dim = {opt.state_dim} is narrower than this task's state ({state.shape[1]}).\n"
                    f"Fix: set env.options.state_dim to at least {state.shape[1]}"
                )
            obs["state"] = np.pad(state, ((0, 0), (0, opt.state_dim - state.shape[1])))
        return obs

    def _close_unused(self) -> None:
        """Close the envs the current task assignment no longer uses, so at most one SAPIEN scene
        per slot stays alive (not one per slot and task)."""
        used = {self._key(b, task) for b, task in enumerate(self._task_of_slot)}
        for key in [key for key in self._sims if key not in used]:
            self._sims.pop(key).close()

    def _groups(self) -> list[tuple[Any, np.ndarray]]:
        """Every (env, batch slots it serves) pair of the current episode."""
        if self.sim_backend == "physx_cuda":
            return [(self._sim(0, self._task_of_slot[0]), np.arange(self.num_envs))]
        return [(self._sim(b, task), np.array([b])) for b, task in enumerate(self._task_of_slot)]

    def reset(self, task_ids: Sequence[int], init_states: Sequence[int]) -> tuple[dict[str, np.ndarray], list[str]]:
        """Start env ``b`` on task ``tasks[task_ids[b]]`` with episode seed ``init_states[b]``.
        Returns obs (each ``[B, ...]``) and ``B`` instructions."""
        task_ids, init_states = self.check_reset(task_ids, init_states)
        if (init_states < 0).any() or (init_states >= 2**31).any():
            raise ValueError("initial states must be integers in 0..2**31-1 (ManiSkill episode seeds)")
        self._task_of_slot = [self.options.tasks[t] for t in task_ids]
        self._close_unused()
        parts: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []
        for sim, slots in self._groups():
            seeds = [int(s) for s in init_states[slots]]
            raw = sim.reset(seed=seeds[0])[0] if len(slots) == 1 else seeded_batch_reset(sim, seeds)
            parts.append((slots, self._convert(raw)))
        self._obs = {key: np.concatenate([p[1][key] for p in parts]) for key in parts[0][1]}
        self.steps = np.zeros(self.num_envs, dtype=np.int64)  # [B]
        self.success = np.zeros(self.num_envs, dtype=bool)  # [B]
        self.done = np.zeros(self.num_envs, dtype=bool)  # [B]
        self.closed = np.zeros(self.num_envs, dtype=bool)  # [B]
        self.grasped = np.zeros(self.num_envs, dtype=bool)  # [B]
        self.ever_grasped = np.zeros(self.num_envs, dtype=bool)  # [B]
        self._started = True
        return {k: v.copy() for k, v in self._obs.items()}, [self.instructions[t] for t in self._task_of_slot]

    def step(self, actions: np.ndarray) -> StepResult:
        """Apply ``actions`` ``[B, 7]`` to every env that is not done (module docstring)."""
        if not self._started:
            raise RuntimeError("call reset() before step()")
        a = self.guard_actions(actions, np.float32)
        close = a[:, 6] > 0  # ours: +1 closes
        a[:, 6] = np.where(close, -1.0, 1.0)  # ManiSkill: -1 closed, +1 open
        active = ~self.done  # [B]
        self.closed = np.where(active, close, self.closed)
        for sim, slots in self._groups():
            live = active[slots]
            if not live.any():
                continue
            raw, _, _, _, info = sim.step(a[slots])
            obs = self._convert(raw)
            rows = slots[live]
            for key, value in obs.items():
                self._obs[key][rows] = value[live]
            self.success[rows] |= _to_numpy(info["success"]).reshape(-1).astype(bool)[live]
            grasped = info.get("is_grasped")
            if grasped is not None:
                self.grasped[rows] = _to_numpy(grasped).reshape(-1).astype(bool)[live]
        self.ever_grasped |= self.grasped
        self.steps += active
        self.done = (self.steps >= self._max_steps) | (self.success & self.options.end_on_success)
        return StepResult(
            obs={k: v.copy() for k, v in self._obs.items()},
            success=self.success.copy(),
            done=self.done.copy(),
            info=self._info(),
        )

    def _info(self) -> dict[str, np.ndarray]:
        phase = np.where(self.grasped, 1, np.where(self.ever_grasped, 2, 0))
        return {
            "gripper": self.closed.astype(np.float32),
            "grasped": self.grasped.copy(),
            "phase": np.where(self.success, 3, phase).astype(np.int64),
        }

    def expert_actions(self) -> np.ndarray | None:
        """``[B, 7]`` scripted expert actions when every env runs PickCube-v1, else None
        (see :func:`pcm_maniskill.expert.pick_cube_actions`)."""
        if not self._started or any(task not in EXPERT_TASKS for task in self._task_of_slot):
            return None
        actions = np.zeros((self.num_envs, 7), dtype=np.float32)
        for sim, slots in self._groups():
            actions[slots] = pick_cube_actions(sim)
        return actions

    def render(self, index: int) -> np.ndarray | None:
        """The latest camera image ``[H, W, 3]`` of env ``index`` (None without ``image``)."""
        if not self._started or "image" not in self._obs:
            return None
        return self._obs["image"][index].copy()

    def close(self) -> None:
        for sim in self._sims.values():
            sim.close()
        self._sims.clear()


def seeded_batch_reset(sim: Any, seeds: Sequence[int]) -> dict[str, Any]:
    """Reset a GPU-parallel ManiSkill env so that env ``i`` starts from the scene of episode seed
    ``seeds[i]``, the same for every env given the same seed; returns the batch's observations.

    ManiSkill draws one batch of random poses from the first seed, so each distinct seed is drawn
    alone (a partial reset of the first env asking for it) and its state is copied to the others.
    """
    import torch

    env = sim.unwrapped  # built with a full reset, so partial resets are allowed from the start
    leaders: dict[int, int] = {}
    for i, seed in enumerate(seeds):
        if seed not in leaders:
            leaders[seed] = i
            sim.reset(seed=int(seed), options={"env_idx": torch.tensor([i], device=env.device)})
    source = torch.tensor([leaders[s] for s in seeds], device=env.device)

    def gather(tree: Any) -> Any:
        return {k: gather(v) for k, v in tree.items()} if isinstance(tree, dict) else tree[source].clone()

    states = gather(env.get_state_dict())
    return sim.reset(options={"reset_to_env_states": {"env_states": states}})[0]
