"""``libero``: ``num_envs`` LIBERO episodes in this process, with the published OpenVLA / OFT conventions.

Every convention below is taken from the published evaluation scripts (see docs/libero.md):

- initial states: the suite's fixed init-state file of the task (50 states); initial-state id
  ``s`` of :meth:`LiberoEnv.reset` selects state ``k = s mod 50``, and runs as episode ``k`` of
  the published loop, which seeds a task's env once (``env.seed(sim_seed)``, 0) and then calls
  ``env.reset()`` and ``env.set_init_state(state)`` for episodes 0, 1, ... in turn: LIBERO places
  fixtures (which the init state does not hold) from numpy's global generator, so episode ``k``'s
  layout is the one after ``k`` earlier resets. Here the generator's state before each episode's
  reset is kept per task (earlier resets are replayed once when an episode comes first), so episode
  ``k`` of task ``t`` gets the published layout and is the same whichever worker process runs it and
  in whatever order. ``sim_seed`` is an option, not the backend's ``seed`` argument, so that every
  member of a group starts from the same scene; nothing else in an episode is random;
- ``settle_steps`` (10) dummy actions ``[0, 0, 0, 0, 0, 0, -1]`` after the reset let the objects
  drop; they do not count against the episode limit and a success during them is ignored;
- episode limit: the suite's published ``max_steps`` policy actions (220 / 280 / 300 / 520 / 400);
- success: LIBERO's own ``done`` flag, which is its BDDL goal check; the episode ends there;
- images: ``agentview`` (and with ``wrist_image`` the ``robot0_eye_in_hand`` camera) rotated by
  180 degrees (``img[::-1, ::-1]``), rendered at ``image_size`` (256 in the published runs);
  resizing to the policy's input size is the policy's job;
- proprio: end-effector position (3), its orientation as axis-angle (3), the two gripper finger
  joint positions (2);
- actions: passed to LIBERO's OSC_POSE controller unchanged (after clipping to ``[-1, 1]``): delta
  position (3), delta rotation (3), gripper -1 open / +1 close, which is the project's convention.

The simulators are built lazily on the first ``reset`` inside the process that calls it (never at
construction), so the backend can be constructed in one process and used in a spawned worker;
MuJoCo's EGL context does not survive a fork.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from pydantic import Field, model_validator

from pcm_core.interfaces import EnvBackend, Options, StepResult
from pcm_libero.install import check_install
from pcm_libero.suites import MAX_STEPS, Suite, resolve_tasks

SETTLE_ACTION = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float64)
"""The published dummy action: no motion, gripper open."""

PROPRIO_DIM = 8

PHASES = ("approach", "grasp", "transport", "goal progress")
"""``info["phase"]`` labels, in id order (see :func:`phase_label`)."""


class LiberoOptions(Options):
    suite: Suite = Field("libero_spatial", description="LIBERO suite")
    tasks: list[int | str] | None = Field(
        None, description="task ids (0-based, LIBERO's order) or task names of the suite; None for all"
    )
    image_size: int = Field(256, ge=16, le=1024, description="camera side in pixels (256 in the published evaluations)")
    wrist_image: bool = Field(False, description="add obs['wrist_image'] from the wrist camera (OpenVLA-OFT uses it)")
    max_steps: int | None = Field(None, gt=0, description="episode limit in actions; None: the suite's published limit")
    settle_steps: int = Field(10, ge=0, description="dummy actions after each reset while objects settle (published: 10)")
    sim_seed: int = Field(0, ge=0, description="LIBERO's scene seed (fixture placement); the published evaluations use 0")
    hard_reset: bool = Field(True, description="reload the MuJoCo model at every reset (LIBERO's default; False is seconds faster)")
    reflections: bool = Field(True, description="render MuJoCo reflections (False renders faster but changes the images)")
    phases: bool = Field(True, description="report info['phase'] from grasp state and BDDL goal predicates")
    lift_height: float = Field(0.03, gt=0.0, description="metres a grasped object must rise for the 'transport' phase")

    @model_validator(mode="after")
    def _check_install_and_tasks(self) -> "LiberoOptions":
        check_install()
        resolve_tasks(self.suite, self.tasks)
        return self


def quat_to_axis_angle(quat: np.ndarray) -> np.ndarray:
    """``[3]`` axis-angle (unit axis times angle, radians) of the ``[4]`` quaternion ``(x, y, z, w)``,
    as robosuite's ``transform_utils.quat2axisangle`` computes it (without changing ``quat``)."""
    w = float(np.clip(quat[3], -1.0, 1.0))
    den = np.sqrt(1.0 - w * w)
    if np.isclose(den, 0.0):
        return np.zeros(3)
    return np.asarray(quat[:3], dtype=np.float64) * 2.0 * np.arccos(w) / den


def phase_label(grasping: bool, lifted: bool, goal_predicates_held: int) -> int:
    """Phase id: 2 transport (an object of interest is grasped and raised by ``lift_height``),
    1 grasp (grasped, not raised), 3 goal progress (nothing grasped, at least one BDDL goal
    predicate holds), 0 approach (anything else)."""
    if grasping:
        return 2 if lifted else 1
    return 3 if goal_predicates_held > 0 else 0


@dataclass
class _Slot:
    """One simulator and the episode it runs."""

    env: Any = None
    task: int = -1
    obs: dict[str, np.ndarray] = field(default_factory=dict)
    steps: int = 0
    success: bool = False
    closed: bool = False
    start_z: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


class LiberoEnv(EnvBackend):
    """``num_envs`` LIBERO simulators of one suite, stepped one after the other in this process.

    Observations (each ``[B, ...]``): ``image`` uint8 ``[B, H, W, 3]`` (agentview, rotated 180
    degrees, ``H = W = image_size``); with ``wrist_image`` also ``wrist_image`` uint8
    ``[B, H, W, 3]``; ``proprio`` float32 ``[B, 8]`` (eef xyz, axis-angle, 2 finger joints).
    Info (each ``[B]``): ``gripper`` float32 (1 after a close command, 0 after an open command),
    ``grasped`` bool (an object of interest is held), ``phase`` int64 (:func:`phase_label`).
    See the module docstring for the conventions and their sources. The ``seed`` argument is not
    used: an episode is fixed by its task, initial state and the ``sim_seed`` option.
    """

    Options = LiberoOptions
    requires = ("libero", "robosuite", "mujoco")
    extra = "libero"

    def __init__(self, options: LiberoOptions, num_envs: int, seed: int = 0) -> None:
        super().__init__(options, num_envs, seed)
        self.options: LiberoOptions = options
        self.task_ids = resolve_tasks(options.suite, options.tasks)
        self._slots = [_Slot() for _ in range(num_envs)]
        self._suite: Any = None
        self._init_states: dict[int, np.ndarray] = {}
        self._reset_rng: dict[int, list[tuple]] = {}  # suite task -> numpy states before the resets of episodes 0, 1, ...

    @property
    def num_tasks(self) -> int:
        return len(self.task_ids)

    @property
    def max_steps(self) -> int:
        return self.options.max_steps or MAX_STEPS[self.options.suite]

    def suite_task(self, task_id: int) -> int:
        """The suite's own task id (LIBERO's order) of this backend's task ``task_id``."""
        return self.task_ids[task_id]

    def _benchmark(self) -> Any:
        if self._suite is None:
            from libero.libero import benchmark

            with contextlib.redirect_stdout(io.StringIO()):  # the constructor prints its task order
                self._suite = benchmark.get_benchmark_dict()[self.options.suite]()
        return self._suite

    def init_states(self, task_id: int) -> np.ndarray:
        """``[S, state_dim]`` the fixed initial simulator states of task ``task_id`` (S = 50)."""
        task = self.suite_task(task_id)
        if task not in self._init_states:
            self._init_states[task] = np.asarray(self._benchmark().get_task_init_states(task))
        return self._init_states[task]

    def instruction(self, task_id: int) -> str:
        """The language instruction the published evaluations give the policy (``task.language``)."""
        return self._benchmark().get_task(self.suite_task(task_id)).language

    def _build(self, task: int) -> Any:
        """A new ``OffScreenRenderEnv`` for suite task ``task``."""
        os.environ.setdefault("MUJOCO_GL", "egl")  # read when robosuite first imports MuJoCo's renderer
        from libero.libero.envs import OffScreenRenderEnv

        opt = self.options
        cameras = ["agentview", "robot0_eye_in_hand"] if opt.wrist_image else ["agentview"]
        env = OffScreenRenderEnv(
            bddl_file_name=self._benchmark().get_task_bddl_file_path(task),
            camera_heights=opt.image_size,
            camera_widths=opt.image_size,
            camera_names=cameras,
            hard_reset=opt.hard_reset,
            horizon=opt.settle_steps + self.max_steps + 1,  # LIBERO raises after its horizon; we stop first
        )
        return env

    def _assign(self, tasks: list[int]) -> None:
        """Give every slot a simulator of its task, reusing built ones; at most ``num_envs`` are kept.

        Exception-safe: the unneeded simulators are closed and dropped before new ones are built,
        and each new one is recorded as soon as it exists, so if a build fails :meth:`close` closes
        every live simulator exactly once (and :meth:`step` asks for a reset)."""
        pool = [s for s in self._slots if s.env is not None]
        fresh: list[_Slot] = []
        for task in tasks:
            match = next((i for i, s in enumerate(pool) if s.task == task), None)
            fresh.append(pool.pop(match) if match is not None else _Slot(task=task))
        self._slots = fresh
        for slot in pool:  # simulators of tasks not needed now
            slot.env.close()
        for slot in fresh:
            if slot.env is None:
                slot.env = self._build(slot.task)

    def reset(self, task_ids: Sequence[int], init_states: Sequence[int]) -> tuple[dict[str, np.ndarray], list[str]]:
        """Start env ``b`` on task ``task_ids[b]`` from fixed initial state ``init_states[b] mod 50``
        and run the settle steps. Returns obs (each ``[B, ...]``) and the ``B`` instructions."""
        task_array, state_array = self.check_reset(task_ids, init_states)
        task_ids, init_states = task_array.tolist(), state_array.tolist()
        if any(s < 0 for s in init_states):
            raise ValueError("initial states must be non-negative integers")
        self._assign([self.suite_task(t) for t in task_ids])
        for slot, task_id, init in zip(self._slots, task_ids, init_states):
            states = self.init_states(task_id)
            self._start(slot, states[init % len(states)], init % len(states))
        return self._stack_obs(), [self.instruction(t) for t in task_ids]

    def _reset_rng_state(self, slot: _Slot, episode: int) -> tuple:
        """numpy's global state before the reset of ``episode`` of ``slot``'s task in the published
        loop (seeded once, then one reset per episode); earlier resets not seen yet are replayed."""
        chain = self._reset_rng.setdefault(slot.task, [])
        if not chain:
            slot.env.seed(self.options.sim_seed)
            chain.append(np.random.get_state())
        while len(chain) <= episode:
            np.random.set_state(chain[-1])
            slot.env.reset()
            chain.append(np.random.get_state())
        return chain[episode]

    def _start(self, slot: _Slot, state: np.ndarray, episode: int) -> None:
        env = slot.env
        numpy_state = np.random.get_state()  # LIBERO draws fixture placements from numpy's global generator
        try:
            env.seed(self.options.sim_seed)
            np.random.set_state(self._reset_rng_state(slot, episode))
            env.reset()
            if not self.options.reflections:
                _disable_reflections(env)
            raw = env.set_init_state(state)
            for _ in range(self.options.settle_steps):
                raw, _, _, _ = env.step(SETTLE_ACTION)
        finally:
            np.random.set_state(numpy_state)
        slot.steps, slot.success, slot.closed = 0, False, False
        slot.start_z = self._object_heights(env)
        slot.obs = self._convert(raw)
        slot.info = self._slot_info(slot)

    def step(self, actions: np.ndarray) -> StepResult:
        """Apply ``actions`` ``[B, 7]`` (clipped to ``[-1, 1]``) to every env that is not done."""
        if not self._slots or any(slot.env is None for slot in self._slots):
            raise RuntimeError("call reset() before step()")
        actions = self.guard_actions(actions)
        limit = self.max_steps
        for slot, action in zip(self._slots, actions):
            if slot.success or slot.steps >= limit:
                continue
            raw, _, done, _ = slot.env.step(action)
            slot.steps += 1
            slot.success = bool(done)
            slot.closed = bool(action[6] > 0)
            slot.obs = self._convert(raw)
            slot.info = self._slot_info(slot)
        success = np.array([s.success for s in self._slots])
        done = success | np.array([s.steps >= limit for s in self._slots])
        info = {
            "gripper": np.array([float(s.closed) for s in self._slots], dtype=np.float32),
            "grasped": np.array([s.info["grasped"] for s in self._slots]),
        }
        if self.options.phases:
            info["phase"] = np.array([s.info["phase"] for s in self._slots], dtype=np.int64)
        return StepResult(obs=self._stack_obs(), success=success, done=done, info=info)

    def _convert(self, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One env's observation in the published layout (module docstring)."""
        obs = {"image": np.ascontiguousarray(raw["agentview_image"][::-1, ::-1])}
        if self.options.wrist_image:
            obs["wrist_image"] = np.ascontiguousarray(raw["robot0_eye_in_hand_image"][::-1, ::-1])
        obs["proprio"] = np.concatenate(
            [raw["robot0_eef_pos"], quat_to_axis_angle(raw["robot0_eef_quat"]), raw["robot0_gripper_qpos"]]
        ).astype(np.float32)
        return obs

    def _stack_obs(self) -> dict[str, np.ndarray]:
        return {key: np.stack([s.obs[key] for s in self._slots]) for key in self._slots[0].obs}

    @staticmethod
    def _interest(env: Any) -> list[str]:
        """The BDDL objects of interest that can be grasped (fixtures excluded)."""
        inner = env.env
        return [name for name in inner.obj_of_interest if name in inner.objects_dict]

    def _object_heights(self, env: Any) -> dict[str, float]:
        inner = env.env
        return {name: float(inner.sim.data.body_xpos[inner.obj_body_id[name]][2]) for name in self._interest(env)}

    def _slot_info(self, slot: _Slot) -> dict[str, Any]:
        """Grasp state and phase of one env from its simulator state."""
        if not self.options.phases:
            return {"grasped": False}
        inner = slot.env.env
        gripper = inner.robots[0].gripper
        heights = self._object_heights(slot.env)
        grasping, lifted = False, False
        for name, z in heights.items():
            if inner._check_grasp(gripper=gripper, object_geoms=inner.objects_dict[name]):
                grasping = True
                lifted |= z > slot.start_z[name] + self.options.lift_height
        held = sum(bool(inner._eval_predicate(p)) for p in inner.parsed_problem["goal_state"])
        return {"grasped": grasping, "phase": phase_label(grasping, lifted, held)}

    def render(self, index: int) -> np.ndarray | None:
        """The last agentview frame ``[H, W, 3]`` of env ``index`` (as the policy sees it)."""
        slot = self._slots[index]
        return slot.obs.get("image") if slot.obs else None

    def close(self) -> None:
        for slot in self._slots:
            if slot.env is not None:
                slot.env.close()
                slot.env = None


def _disable_reflections(env: Any) -> None:
    """Turn off MuJoCo's reflection pass in the env's offscreen render context."""
    import mujoco

    context = env.env.sim._render_context_offscreen
    if context is not None:
        context.scn.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
