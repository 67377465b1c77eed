"""Tabletop pick-and-place: the embedded default environment (pure numpy, vectorised, no downloads).

Scene (table units; the table is the square ``[-1, 1] x [-1, 1]``, heights ``z`` in ``[0, 0.5]``):

- three blocks (red, yellow, purple), ``0.24 x 0.08``, each with a random position and yaw in
  ``[-1.2, 1.2]`` rad; the block is symmetric under a half turn, so yaw matters modulo ``pi``;
- two target plates (green, blue): discs of radius ``target_radius`` (0.2);
- a parallel-jaw gripper at ``(x, y, z, yaw)``, starting at ``(0, 0, 0.3, 0)`` open.

Task ``i`` is "put the <block ``i // 2``> block on the <plate ``i % 2``> plate" (6 variants, or the
``tasks`` subset). The layout is drawn from ``numpy.random.default_rng(init_state)`` alone: the same
initial state gives the same layout for every task, every ``num_envs`` and every env ``seed``.
Blocks start at least 0.35 from every plate centre (plate radius is at most 0.25), 0.3 from each
other and 0.3 from the gripper's start; plates are at least 0.55 apart.

Actions (LIBERO convention), 7 numbers clipped to ``[-1, 1]``:
``dx, dy, dz`` move the gripper by ``max_translation`` (0.05) per unit, ``droll, dpitch`` are
ignored, ``dyaw`` turns it by ``max_rotation`` (0.15 rad) per unit (yaw is limited to
``[-pi/2, pi/2]``), and the gripper closes when ``a[6] > 0`` and opens otherwise.

The decisive phase is the grasp. When the gripper goes from open to closed, the block nearest to it
in the plane is grasped only if it stands (is not toppled) and all three hold after this step's
motion: ``|xy_gripper - xy_block| <= grasp_tolerance`` (0.03), ``|yaw error| <= yaw_tolerance``
(0.15 rad, modulo ``pi``) and ``z <= grasp_height`` (0.04). A close that misses this at
``z <= grasp_height`` within one block length of the block does what ``miss`` says:

- ``topple`` (default): the block is knocked over for good and can never be grasped, so a miss of
  the named block decides the episode: it fails, whatever the policy does in the chunks left;
- ``knock`` (the hard variant): the block is pushed ``miss_push`` (0.1) away from the gripper and
  turned by ``miss_turn`` (0.4 rad) away from the gripper's yaw, so every failed grasp costs a new
  approach, and the policy may retry.

The gripper stays closed on nothing until it is opened again. Approach, transport and release are
easy: a grasped block follows the gripper (centred on it, aligned with its yaw) and is dropped where
the gripper opens. Success: the named block is not held and its centre lies within
``target_radius`` of the named plate (normally after a drop; a block knocked onto the plate counts too).

An episode ends (``done``) at its first success, as LIBERO's do, or at ``max_steps`` (256) env
steps. Nothing after a success can change the outcome, so those chunks would only add noise to
the policy gradient (set ``end_on_success: false`` for a fixed horizon, where a solved episode
runs on to ``max_steps``). ``success`` stays True once achieved.

Phase labels (``info["phase"]``, computed from the state after each step, relative to the named
block and plate, first rule that applies):

- 3 toppled: the named block was knocked over (``miss="topple"``), so the episode has failed;
- 2 transport + place: the named block is held, or the task is solved;
- 1 align + grasp (decisive): the gripper's xy is within ``align_radius`` (0.1) of the named block;
- 0 approach: anything else.

Labels 2 and 3 each occur (almost) only on one side of the outcome (successes, failures), so a
success-failure proxy scores only the phases both sides visit: approach and align + grasp.
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
from pydantic import Field, field_validator

from pcm_core.interfaces import EnvBackend, Options, StepResult
from pcm_tabletop.render import Geometry, Scene, render_scenes

OBJECT_NAMES = ("red", "yellow", "purple")
TARGET_NAMES = ("green", "blue")
NUM_OBJECTS = len(OBJECT_NAMES)
NUM_TARGETS = len(TARGET_NAMES)
NUM_VARIANTS = NUM_OBJECTS * NUM_TARGETS

MAX_HEIGHT = 0.5
START_XYZ = (0.0, 0.0, 0.3)
HOVER_HEIGHT = 0.3
MAX_YAW = np.pi / 2
OBJECT_YAW_RANGE = 1.2
OBJECT_RANGE = 0.8
TARGET_RANGE = 0.7
MIN_OBJECT_GAP = 0.3
MIN_TARGET_GAP = 0.55
MAX_TARGET_RADIUS = 0.25
TARGET_CLEARANCE = 0.35
START_CLEARANCE = 0.3
BLOCK_LENGTH, BLOCK_WIDTH = 0.24, 0.08

PROPRIO_DIM = 5
STATE_DIM = 12


def instruction(variant: int) -> str:
    """The language instruction of task variant ``variant`` (0..5)."""
    obj, target = divmod(variant, NUM_TARGETS)
    return f"put the {OBJECT_NAMES[obj]} block on the {TARGET_NAMES[target]} plate"


def wrap_half_turn(angle: np.ndarray) -> np.ndarray:
    """Angles modulo ``pi`` into ``[-pi/2, pi/2)`` (a block looks the same after a half turn)."""
    return (angle + np.pi / 2) % np.pi - np.pi / 2


def sample_layout(init_state: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Block centres ``[O, 2]``, block yaws ``[O]`` and plate centres ``[T, 2]`` for ``init_state``.

    Rejection sampling from ``default_rng(init_state)``: plates at least ``MIN_TARGET_GAP`` apart,
    blocks at least ``MIN_OBJECT_GAP`` apart and clear of every plate and of the gripper's start.
    """
    rng = np.random.default_rng(init_state)
    while True:
        targets = rng.uniform(-TARGET_RANGE, TARGET_RANGE, (NUM_TARGETS, 2))
        if np.linalg.norm(targets[0] - targets[1]) >= MIN_TARGET_GAP:
            break
    objects: list[np.ndarray] = []
    while len(objects) < NUM_OBJECTS:
        candidate = rng.uniform(-OBJECT_RANGE, OBJECT_RANGE, 2)
        if np.linalg.norm(targets - candidate, axis=1).min() < TARGET_CLEARANCE:
            continue
        if np.linalg.norm(candidate - np.array(START_XYZ[:2])) < START_CLEARANCE:
            continue
        if objects and np.linalg.norm(np.array(objects) - candidate, axis=1).min() < MIN_OBJECT_GAP:
            continue
        objects.append(candidate)
    yaws = rng.uniform(-OBJECT_YAW_RANGE, OBJECT_YAW_RANGE, NUM_OBJECTS)
    return np.array(objects), yaws, targets


class TabletopOptions(Options):
    image_size: int = Field(64, ge=16, le=512, description="side of the square top-down camera image in pixels")
    render_size: int = Field(128, ge=16, le=1024, description="side of the frames render() draws for videos")
    max_steps: int = Field(
        256, ge=1, description="episode limit in env steps (64 chunks of 4 actions); with end_on_success a solved episode ends earlier"
    )
    max_translation: float = Field(0.05, gt=0.0, description="gripper travel per step at |action| = 1 (table is 2 x 2)")
    max_rotation: float = Field(0.15, gt=0.0, description="gripper yaw change per step at |action| = 1, radians")
    grasp_tolerance: float = Field(0.03, gt=0.0, description="max gripper-to-block distance in the plane for a grasp")
    yaw_tolerance: float = Field(
        0.15, gt=0.0, description="max gripper-to-block yaw error for a grasp, radians (mod pi)"
    )
    grasp_height: float = Field(0.04, gt=0.0, description="the gripper must be at or below this height to grasp")
    miss: Literal["topple", "knock"] = Field(
        "topple",
        description="what a close that misses at grasp height does to the block under the jaws: 'topple' knocks it "
        "over for good (it can no longer be grasped, so a missed named block fails the episode); 'knock' pushes and "
        "turns it, and the policy may retry (the hard variant)",
    )
    miss_push: float = Field(0.1, ge=0.0, description="with miss='knock': how far a failed grasp pushes the block away")
    miss_turn: float = Field(0.4, ge=0.0, description="with miss='knock': how much a failed grasp turns the block, radians")
    target_radius: float = Field(
        0.2, gt=0.0, le=MAX_TARGET_RADIUS, description="radius of the target plates (success zone)"
    )
    align_radius: float = Field(0.1, gt=0.0, description="phase 1 (align + grasp) starts this close to the block")
    tasks: list[int] | None = Field(
        None, description="subset of the 6 task variants (task id i runs variant tasks[i]); None for all"
    )
    state_obs: bool = Field(
        True, description="add obs['state'] (named block pose, plate position): a training aid for tiny policies"
    )
    expert_noise: float = Field(0.0, ge=0.0, description="std of Gaussian noise added to every expert action")
    end_on_success: bool = Field(True, description="an episode is done at its first success (else only at max_steps)")

    @field_validator("tasks")
    @classmethod
    def _known_variants(cls, tasks: list[int] | None) -> list[int] | None:
        if tasks is not None and (not tasks or any(not 0 <= t < NUM_VARIANTS for t in tasks)):
            raise ValueError(f"tasks must be a non-empty subset of 0..{NUM_VARIANTS - 1}")
        return tasks


class TabletopEnv(EnvBackend):
    """``num_envs`` tabletop pick-and-place episodes stepped together (see the module docstring).

    Observations (each ``[B, ...]``, ``B = num_envs``):
        ``image``: uint8 ``[B, H, W, 3]`` top-down camera, ``H = W = image_size``.
        ``proprio``: float32 ``[B, 5]`` gripper x, y, height (``2 z / 0.5 - 1``), yaw / (pi/2),
            gripper (+1 closed, -1 open); all in ``[-1, 1]``.
        ``state`` (with ``state_obs``): float32 ``[B, 12]`` named block x, y, height (as above),
            sin(2 yaw), cos(2 yaw), named plate x, y, then relative to the gripper: block x, y
            offsets, yaw error / (pi/2), plate x, y offsets.
    Info (each ``[B]``): ``gripper`` float32 (1 closed, 0 open), ``phase`` int64 (module docstring),
    ``grasped`` bool (any block held), ``failed_grasps`` int64 (misaligned closes so far), ``toppled`` bool
    (the named block was knocked over).
    """

    Options = TabletopOptions
    phase_names = ("approach", "align + grasp", "transport + place", "toppled")  # info["phase"] 0..3

    def __init__(self, options: TabletopOptions, num_envs: int, seed: int = 0) -> None:
        super().__init__(options, num_envs, seed)
        self.options: TabletopOptions = options
        self.variants = np.array(options.tasks if options.tasks is not None else range(NUM_VARIANTS))
        self.geometry = Geometry(
            block_length=BLOCK_LENGTH,
            block_width=BLOCK_WIDTH,
            target_radius=options.target_radius,
            jaw_length=0.14,
            jaw_width=0.04,
            jaw_gap_open=0.1,
            jaw_gap_closed=0.05,
            max_height=MAX_HEIGHT,
        )
        self.rng = np.random.default_rng(seed)
        self._started = False

    @classmethod
    def observation_bytes(cls, options: TabletopOptions) -> int:
        """The uint8 camera image and the float32 proprio and state vectors (a generous 64 numbers)."""
        return options.image_size**2 * 3 + 64 * 4

    @property
    def num_tasks(self) -> int:
        return len(self.variants)

    @property
    def max_steps(self) -> int:
        return self.options.max_steps

    def reset(self, task_ids: Sequence[int], init_states: Sequence[int]) -> tuple[dict[str, np.ndarray], list[str]]:
        """Start every env: task id ``task_ids[b]`` (index into the task subset) from layout
        ``init_states[b]`` (a non-negative integer). Returns obs (each ``[B, ...]``) and ``B`` instructions."""
        task_ids, init_states = self.check_reset(task_ids, init_states)
        if (init_states < 0).any():
            raise ValueError("initial states must be non-negative integers")
        variant = self.variants[task_ids]
        self.task_obj, self.task_target = np.divmod(variant, NUM_TARGETS)  # [B], [B]
        layouts = [sample_layout(int(s)) for s in init_states]
        self.obj_xy = np.stack([layout[0] for layout in layouts])  # [B, O, 2]
        self.obj_yaw = np.stack([layout[1] for layout in layouts])  # [B, O]
        self.target_xy = np.stack([layout[2] for layout in layouts])  # [B, T, 2]
        self.grip_xyz = np.tile(np.array(START_XYZ), (self.num_envs, 1))  # [B, 3]
        self.grip_yaw = np.zeros(self.num_envs)  # [B]
        self.closed = np.zeros(self.num_envs, dtype=bool)  # [B]
        self.held = np.full(self.num_envs, -1, dtype=np.int64)  # index of the held block, -1 none  [B]
        self.toppled = np.zeros((self.num_envs, NUM_OBJECTS), dtype=bool)  # knocked over for good  [B, O]
        self.success = np.zeros(self.num_envs, dtype=bool)  # [B]
        self.failed_grasps = np.zeros(self.num_envs, dtype=np.int64)  # [B]
        self.steps = np.zeros(self.num_envs, dtype=np.int64)  # [B]
        self._rows = np.arange(self.num_envs)
        self._image = np.zeros((self.num_envs, self.options.image_size, self.options.image_size, 3), dtype=np.uint8)
        self._stale = np.ones(self.num_envs, dtype=bool)  # rows whose scene changed since their last render  [B]
        self._started = True
        return self._observe(), [instruction(int(v)) for v in variant]

    def step(self, actions: np.ndarray) -> StepResult:
        """Apply ``actions`` ``[B, 7]`` to every env that is not done (see the module docstring)."""
        return self._advance(actions, observe=True)

    def step_chunk(self, actions: np.ndarray) -> list[StepResult]:
        """Apply a chunk ``[B, K, 7]``; only the last result carries observations (rendering the
        image is most of a step's cost)."""
        last = actions.shape[1] - 1
        return [self._advance(actions[:, k], observe=k == last) for k in range(last + 1)]

    def _advance(self, actions: np.ndarray, observe: bool) -> StepResult:
        """One step of every env; ``obs`` is empty unless ``observe``."""
        if not self._started:
            raise RuntimeError("call reset() before step()")
        a = self.guard_actions(actions)
        active = ~self._done()  # [B]
        opt = self.options

        move = a[:, :3] * opt.max_translation * active[:, None]
        self.grip_xyz = np.clip(self.grip_xyz + move, [-1.0, -1.0, 0.0], [1.0, 1.0, MAX_HEIGHT])
        self.grip_yaw = np.clip(self.grip_yaw + a[:, 5] * opt.max_rotation * active, -MAX_YAW, MAX_YAW)

        close = np.where(active, a[:, 6] > 0, self.closed)
        self._grasp(close & ~self.closed)
        holding = self.held >= 0  # held blocks (and a fresh grasp) sit centred between the jaws
        self.obj_xy[holding, self.held[holding]] = self.grip_xyz[holding, :2]
        self.obj_yaw[holding, self.held[holding]] = self.grip_yaw[holding]
        self.held = np.where(~close & self.closed, -1, self.held)  # opening drops the block here
        self.closed = close

        self.success |= active & (self.held != self.task_obj) & self._on_target()
        self.steps += active
        self._stale |= active
        done = self._done()
        obs = self._observe() if observe else {}
        return StepResult(obs=obs, success=self.success.copy(), done=done, info=self._info())

    def _done(self) -> np.ndarray:
        """``[B]`` bool, the episode is over: ``max_steps`` reached, or solved with ``end_on_success``."""
        done = self.steps >= self.max_steps
        return done | self.success if self.options.end_on_success else done

    def _grasp(self, closing: np.ndarray) -> None:
        """Grasp attempts of the envs in ``closing`` ``[B]``: grasp the nearest block when aligned,
        otherwise knock it if the jaws came down on it."""
        if not closing.any():
            return
        offset = self.obj_xy - self.grip_xyz[:, None, :2]  # gripper -> block  [B, O, 2]
        dist = np.linalg.norm(offset, axis=-1)  # [B, O]
        nearest = dist.argmin(axis=1)  # [B]
        near_dist = dist[self._rows, nearest]  # [B]
        yaw_error = wrap_half_turn(self.grip_yaw - self.obj_yaw[self._rows, nearest])  # [B]
        low = self.grip_xyz[:, 2] <= self.options.grasp_height
        aligned = (near_dist <= self.options.grasp_tolerance) & (np.abs(yaw_error) <= self.options.yaw_tolerance)
        standing = ~self.toppled[self._rows, nearest]
        grasped = closing & low & aligned & standing
        self.held = np.where(grasped, nearest, self.held)
        missed = closing & low & ~(aligned & standing)
        self.failed_grasps += missed
        knocked = missed & (near_dist <= BLOCK_LENGTH)
        if self.options.miss == "topple":
            self.toppled[self._rows[knocked], nearest[knocked]] = True
        elif knocked.any():
            b, k = self._rows[knocked], nearest[knocked]
            angle = self.grip_yaw[b] + np.pi / 2  # across the jaws, for a block right under the gripper
            fallback = np.stack([np.cos(angle), np.sin(angle)], axis=-1)  # [n, 2]
            dist_bk = near_dist[b, None]  # [n, 1]
            direction = np.where(dist_bk > 1e-6, offset[b, k] / np.maximum(dist_bk, 1e-6), fallback)  # [n, 2]
            self.obj_xy[b, k] = np.clip(self.obj_xy[b, k] + self.options.miss_push * direction, -1.0, 1.0)
            turn = np.where(yaw_error[b] >= 0, -1.0, 1.0) * self.options.miss_turn  # away from the gripper yaw
            self.obj_yaw[b, k] = wrap_half_turn(self.obj_yaw[b, k] + turn)

    def _on_target(self) -> np.ndarray:
        """``[B]`` bool: the named block's centre is within ``target_radius`` of the named plate."""
        block = self.obj_xy[self._rows, self.task_obj]
        plate = self.target_xy[self._rows, self.task_target]
        return np.linalg.norm(block - plate, axis=-1) <= self.options.target_radius

    def _phase(self) -> np.ndarray:
        """``[B]`` int64 phase labels (module docstring)."""
        block = self.obj_xy[self._rows, self.task_obj]
        near = np.linalg.norm(self.grip_xyz[:, :2] - block, axis=-1) <= self.options.align_radius
        phase = np.where(near, 1, 0)
        phase = np.where((self.held == self.task_obj) | self.success, 2, phase)
        return np.where(self.toppled[self._rows, self.task_obj] & ~self.success, 3, phase).astype(np.int64)

    def _info(self) -> dict[str, np.ndarray]:
        return {
            "gripper": self.closed.astype(np.float32),
            "phase": self._phase(),
            "grasped": self.held >= 0,
            "failed_grasps": self.failed_grasps.copy(),
            "toppled": self.toppled[self._rows, self.task_obj].copy(),
        }

    def _obj_z(self) -> np.ndarray:
        """``[B, O]`` block heights: a held block is at the gripper's height, others on the table."""
        held = self.held[:, None] == np.arange(NUM_OBJECTS)[None, :]
        return np.where(held, self.grip_xyz[:, 2:3], 0.0)

    def _scene(self, index: slice | np.ndarray) -> Scene:
        return Scene(
            obj_xy=self.obj_xy[index],
            obj_z=self._obj_z()[index],
            obj_yaw=self.obj_yaw[index],
            target_xy=self.target_xy[index],
            grip_xyz=self.grip_xyz[index],
            grip_yaw=self.grip_yaw[index],
            closed=self.closed[index],
        )

    def _observe(self) -> dict[str, np.ndarray]:
        height = 2.0 * self.grip_xyz[:, 2:3] / MAX_HEIGHT - 1.0
        proprio = np.concatenate(
            [
                self.grip_xyz[:, :2],
                height,
                (self.grip_yaw / MAX_YAW)[:, None],
                np.where(self.closed, 1.0, -1.0)[:, None],
            ],
            axis=1,
        )
        stale = np.flatnonzero(self._stale)  # a finished env's scene no longer changes: its last image is reused
        if len(stale):
            self._image[stale] = render_scenes(self._scene(stale), self.geometry, self.options.image_size)
            self._stale[:] = False
        obs = {
            "image": self._image.copy(),
            "proprio": proprio.astype(np.float32),
        }
        if self.options.state_obs:
            block_yaw = self.obj_yaw[self._rows, self.task_obj]
            block_z = self._obj_z()[self._rows, self.task_obj]
            obs["state"] = np.concatenate(
                [
                    self.obj_xy[self._rows, self.task_obj],
                    (2.0 * block_z / MAX_HEIGHT - 1.0)[:, None],
                    np.sin(2 * block_yaw)[:, None],
                    np.cos(2 * block_yaw)[:, None],
                    self.target_xy[self._rows, self.task_target],
                    self.obj_xy[self._rows, self.task_obj] - self.grip_xyz[:, :2],
                    ((block_yaw - self.grip_yaw) / MAX_YAW)[:, None],
                    self.target_xy[self._rows, self.task_target] - self.grip_xyz[:, :2],
                ],
                axis=1,
            ).astype(np.float32)
        return obs

    def expert_actions(self, noise: float | None = None) -> np.ndarray:
        """``[B, 7]`` scripted expert actions for the current state of every env.

        Per env, in priority order: after success, open and rise to hover height; holding the named
        block, rise to hover height, fly over the plate centre and open there; gripper closed
        otherwise (a miss or a wrong block), open and rise; else fly above the named block at
        hover height while turning to its yaw, descend once within 0.03 of it, and close at grasp
        height once within half of both grasp tolerances. Motion is proportional (``error / max
        step``, clipped). Gaussian noise of std ``noise`` (default: the ``expert_noise`` option)
        from the env's own generator is added to all 7 dims before clipping to ``[-1, 1]``.
        """
        if not self._started:
            raise RuntimeError("call reset() before expert_actions()")
        opt = self.options
        noise = opt.expert_noise if noise is None else noise
        xy, z, yaw = self.grip_xyz[:, :2], self.grip_xyz[:, 2], self.grip_yaw
        block = self.obj_xy[self._rows, self.task_obj]  # [B, 2]
        block_yaw = self.obj_yaw[self._rows, self.task_obj]  # [B]
        plate = self.target_xy[self._rows, self.task_target]  # [B, 2]
        holding_task = self.held == self.task_obj

        goal_xy = block.copy()
        goal_z = np.full(self.num_envs, HOVER_HEIGHT)
        goal_yaw = block_yaw.copy()
        grip = np.full(self.num_envs, -1.0)

        to_block = np.linalg.norm(block - xy, axis=-1)
        goal_z = np.where(to_block <= 0.03, 0.5 * opt.grasp_height, goal_z)
        ready = (
            (to_block <= 0.5 * opt.grasp_tolerance)
            & (np.abs(block_yaw - yaw) <= 0.5 * opt.yaw_tolerance)
            & (z <= opt.grasp_height)
        )
        grip = np.where(ready & ~self.closed, 1.0, grip)
        goal_xy = np.where(ready[:, None], xy, goal_xy)
        goal_z = np.where(ready, z, goal_z)

        stray = self.closed & ~holding_task  # closed on nothing or on another block: open and rise
        goal_xy = np.where(stray[:, None], xy, goal_xy)
        goal_z = np.where(stray, HOVER_HEIGHT, goal_z)
        goal_yaw = np.where(stray, yaw, goal_yaw)
        grip = np.where(stray, -1.0, grip)

        to_plate = np.linalg.norm(plate - xy, axis=-1)
        lifted = z >= HOVER_HEIGHT - 0.01
        release = holding_task & (to_plate <= 0.03)
        goal_xy = np.where(holding_task[:, None], xy, goal_xy)  # rise (or release) in place
        goal_xy = np.where((holding_task & lifted & ~release)[:, None], plate, goal_xy)
        goal_z = np.where(holding_task, np.where(release, z, HOVER_HEIGHT), goal_z)
        goal_yaw = np.where(holding_task, yaw, goal_yaw)
        grip = np.where(holding_task, np.where(release, -1.0, 1.0), grip)

        done_with_block = (self.success & ~holding_task) | self.toppled[self._rows, self.task_obj]  # solved or lost
        goal_xy = np.where(done_with_block[:, None], xy, goal_xy)
        goal_z = np.where(done_with_block, HOVER_HEIGHT, goal_z)
        goal_yaw = np.where(done_with_block, yaw, goal_yaw)
        grip = np.where(done_with_block, -1.0, grip)

        action = np.zeros((self.num_envs, 7))
        action[:, :2] = (goal_xy - xy) / opt.max_translation
        action[:, 2] = (goal_z - z) / opt.max_translation
        action[:, 5] = (goal_yaw - yaw) / opt.max_rotation
        action[:, 6] = grip
        if noise > 0:
            action = action + self.rng.normal(0.0, noise, action.shape)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def render(self, index: int) -> np.ndarray:
        """RGB frame uint8 ``[render_size, render_size, 3]`` of env ``index``, drawn at full resolution."""
        if not self._started:
            raise RuntimeError("call reset() before render()")
        scene = self._scene(np.array([index]))
        return render_scenes(scene, self.geometry, self.options.render_size)[0]
