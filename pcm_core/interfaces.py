"""The component kinds plugins implement: five that make up a run, and trackers that watch it.

Each component class declares a pydantic ``Options`` model (its configuration, validated before
anything heavy is built) and is constructed as ``Component(options, **context)``. Heavy imports
(simulators, large models) belong in ``__init__``, never at module import, so registration and
``pcm-run --dry-run`` stay cheap. ``requires`` names importable modules the component needs at
build time and ``extra`` the ``pcm-vla`` extra that installs them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar, Sequence

import numpy as np
import torch
from pydantic import ConfigDict
from torch import Tensor, nn

from pcm_core.fields import NumbersAreNumbers
from pcm_core.types import ActionSpec, PhaseScores, PolicyOutput, RolloutBatch, Selection


class Options(NumbersAreNumbers):
    """Base of every component's options: unknown keys are errors, numbers are finite and no booleans."""

    model_config = ConfigDict(extra="forbid")


class Component(ABC):
    """Common base: a registered name, an options model, optional heavy requirements."""

    Options: ClassVar[type[Options]] = Options
    requires: ClassVar[tuple[str, ...]] = ()
    extra: ClassVar[str | None] = None

    def __init__(self, options: Options) -> None:
        self.options = options


@dataclass
class StepResult:
    """What a vector environment returns for one action per env.

    Attributes:
        obs: each ``[B, ...]`` (``image`` uint8 ``[B, H, W, 3]``, ``proprio`` float32 ``[B, P_dim]``).
        success: ``[B]`` bool, the task is solved.
        done: ``[B]`` bool, the episode ended (success, failure or time limit).
        info: each ``[B, ...]``, e.g. ``gripper`` (1 closed, 0 open) and ``phase`` labels.
        lost: ``[B]`` bool, the env's episode was lost since the last ``reset`` (its worker process
            died; see :mod:`pcm_core.vector_env`) and its trajectory must be dropped; None for
            envs that cannot lose episodes.
    """

    obs: dict[str, np.ndarray]
    success: np.ndarray
    done: np.ndarray
    info: dict[str, np.ndarray]
    lost: np.ndarray | None = None


class EnvBackend(Component):
    """A batch of ``num_envs`` environments stepped together (one action per env per call).

    Actions are 7-dim and normalised to [-1, 1]: delta end-effector position (3), delta rotation
    (3), gripper (-1 open, +1 close). Once an env reports ``done`` it ignores further actions and
    repeats its last observation until the next ``reset``.
    """

    phase_names: ClassVar[tuple[str, ...] | None] = None
    """Names of the phase labels the env reports in ``info["phase"]`` (0, 1, ...), if it reports them."""

    @classmethod
    def observation_bytes(cls, options: Options) -> int | None:
        """About how many bytes one observation of one env takes with ``options`` (the memory check
        of a step's rollout batch, :mod:`pcm_core.memory`); None: unknown, not checked."""
        return None

    def __init__(self, options: Options, num_envs: int, seed: int = 0) -> None:
        super().__init__(options)
        self.num_envs = num_envs
        self.seed = seed

    @property
    @abstractmethod
    def num_tasks(self) -> int:
        """Number of task variants that ``reset`` accepts as ``task_ids``."""

    @property
    @abstractmethod
    def max_steps(self) -> int:
        """Episode limit in env steps (one action each)."""

    @abstractmethod
    def reset(self, task_ids: Sequence[int], init_states: Sequence[int]) -> tuple[dict[str, np.ndarray], list[str]]:
        """Start ``num_envs`` episodes; env ``b`` runs task ``task_ids[b]`` from initial state
        ``init_states[b]`` (the same pair gives the same start). Returns observations
        (each ``[B, ...]``) and the ``B`` language instructions."""

    def check_reset(self, task_ids: Sequence[int], init_states: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """``reset``'s arguments as int64 arrays ``[B]``, after checking that there is one of each per
        env and that every task id is in ``0..num_tasks-1`` (what counts as an initial state is the
        env's own rule)."""
        task_ids = np.asarray(task_ids, dtype=np.int64)
        init_states = np.asarray(init_states, dtype=np.int64)
        if task_ids.shape != (self.num_envs,) or init_states.shape != (self.num_envs,):
            raise ValueError(f"reset needs {self.num_envs} task ids and {self.num_envs} initial states")
        if ((task_ids < 0) | (task_ids >= self.num_tasks)).any():
            raise ValueError(f"task ids must be in 0..{self.num_tasks - 1}")
        return task_ids, init_states

    @abstractmethod
    def step(self, actions: np.ndarray) -> StepResult:
        """Apply ``actions`` ``[B, D]`` and advance every env that is not done."""

    def guard_actions(self, actions: np.ndarray, dtype: type = np.float64) -> np.ndarray:
        """``actions`` as a ``[B, 7]`` array of ``dtype`` in ``[-1, 1]`` (NaN -> 0, +-inf -> the
        bounds); any other shape is a clear error."""
        actions = np.asarray(actions, dtype=dtype)
        if actions.shape != (self.num_envs, 7):
            raise ValueError(f"actions must be [{self.num_envs}, 7], got {list(actions.shape)}")
        return np.clip(np.nan_to_num(actions), -1.0, 1.0)

    def step_chunk(self, actions: np.ndarray) -> list[StepResult]:
        """Apply the K actions of a chunk ``[B, K, D]`` in order: one :class:`StepResult` per action.

        Rollouts read only the last result's ``obs``; an env may leave the others' ``obs`` empty
        to skip rendering observations that no policy sees.
        """
        return [self.step(actions[:, k]) for k in range(actions.shape[1])]

    def expert_actions(self) -> np.ndarray | None:
        """``[B, D]`` a scripted expert's next action for every env (for SFT warm starts),
        or None when the environment has no expert."""
        return None

    def render(self, index: int) -> np.ndarray | None:
        """An RGB frame ``[H, W, 3]`` of env ``index`` for videos, or None."""
        return None

    def close(self) -> None:
        """Release simulator processes and resources."""


class PolicyBackend(Component):
    """A VLA that maps (observation, instruction) to an action chunk through discrete action tokens.

    ``module`` holds every trainable parameter. ``act`` samples a chunk per observation;
    ``log_probs`` re-scores given tokens with gradients, which is all the learner needs.
    """

    @classmethod
    def parameter_count(cls, options: Options) -> int | None:
        """About how many parameters the policy ``options`` build has (the memory check of
        :mod:`pcm_core.memory`: weights, gradients and Adam's two moments); None: unknown."""
        return None

    def __init__(self, options: Options, action_spec: ActionSpec | None = None) -> None:
        super().__init__(options)

    @property
    @abstractmethod
    def module(self) -> nn.Module:
        """The ``nn.Module`` whose parameters the optimizer updates."""

    @property
    @abstractmethod
    def action_spec(self) -> ActionSpec:
        """Chunk size K and action dimension D of one policy call."""

    @property
    @abstractmethod
    def tokens_per_chunk(self) -> int:
        """L, the number of action tokens per chunk."""

    @abstractmethod
    def act(
        self,
        obs: dict[str, Tensor],
        instructions: list[str],
        generator: torch.Generator | None = None,
        greedy: bool = False,
    ) -> PolicyOutput:
        """Sample (or, with ``greedy``, take the mode of) one chunk per observation ``[B, ...]``."""

    @abstractmethod
    def log_probs(self, obs: dict[str, Tensor], instructions: list[str], tokens: Tensor) -> Tensor:
        """``[B, L]`` log-probabilities of ``tokens`` ``[B, L]``, differentiable w.r.t. ``module``."""

    @abstractmethod
    def actions_to_tokens(self, actions: Tensor) -> Tensor:
        """Discretise actions ``[B, K, D]`` in the env's units, as ``act`` returns them, into tokens
        ``[B, L]`` (SFT labels): the inverse of ``act``'s decoding, up to the bin width."""

    @abstractmethod
    def save(self, path: str) -> None:
        """Write weights (safetensors) and config to the folder ``path``."""

    def to(self, device: torch.device | str) -> "PolicyBackend":
        self.module.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device


class PhaseSegmenter(Component):
    """Maps every chunk of a batch to a phase id in ``0..num_phases-1``."""

    @property
    @abstractmethod
    def num_phases(self) -> int:
        """P."""

    @property
    def phase_names(self) -> list[str]:
        """``P`` names of the phases, in id order, for tables and plots (``phase 0``, ``phase 1``, ...
        unless the segmenter knows better)."""
        return [f"phase {k}" for k in range(self.num_phases)]

    @abstractmethod
    def segment(self, batch: RolloutBatch) -> Tensor:
        """``[N, T]`` long phase ids (values on padding are ignored)."""


class VarianceProxy(Component):
    """Scores each phase by how much its chunks can teach (higher = keep more often)."""

    @abstractmethod
    def score(self, batch: RolloutBatch, phases: Tensor, num_phases: int) -> PhaseScores:
        """Per-phase sums and counts from one batch; ``phases`` is ``[N, T]``."""


class BudgetSampler(Component):
    """Chooses the chunks of each trajectory that enter the forward/backward pass."""

    @abstractmethod
    def select(
        self,
        phases: Tensor,
        lengths: Tensor,
        keep_probs: Tensor,
        budget: Tensor,
        generator: torch.Generator | None = None,
    ) -> Selection:
        """Pick chunks from ``phases`` ``[N, T]`` with ``lengths`` ``[N]``, given phase
        keep-probabilities ``keep_probs`` ``[P]`` and ``budget`` ``[N]``: the chunks ``B_i <= T_i``
        to keep of each trajectory (:func:`pcm_core.algo.pcm.trajectory_budgets`)."""


class TrackerBackend(Component):
    """Where a run's params, per-step metrics, artifacts and videos go: MLflow, TensorBoard, W&B...

    Built as ``Backend(options, settings=TrackingConfig, run_dir=Path, log=print)`` once the run
    folder exists (``log`` prints a line where the run's output goes); a run may enable several (``tracking.backends``). Any method may raise: the run's
    :class:`~pcm_core.tracking.Tracker` turns a backend's first failure into one warning and stops
    calling it, so tracking never stops training.
    """

    run_id: str | None = None
    """The backend's id of this run once started (kept in checkpoints, so a resumed run continues it)."""

    def __init__(self, options: Options, settings: object, run_dir: Path, log: Callable[[str], object] = print) -> None:
        super().__init__(options)
        self.settings = settings  # pcm_core.config.TrackingConfig
        self.run_dir = run_dir
        self.log = log

    @abstractmethod
    def start(self, params: dict[str, str], tags: dict[str, str], resume_id: str | None) -> None:
        """Open the run: the flattened resolved config ``params`` and the environment fingerprint
        ``tags``; ``resume_id`` is :attr:`run_id` of the run being resumed (None for a new run)."""

    @abstractmethod
    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """One step's metrics (names as in docs/metrics.md: ``success_rate``, ``keep_prob/phase_0``...)."""

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        """A file or folder of the run (plots, the final policy); ignored by default."""

    def log_video(self, path: Path, step: int) -> None:
        """An MP4 of rollouts written at ``step``; by default an artifact in ``videos/``."""
        self.log_artifact(path, "videos")

    @abstractmethod
    def end(self, status: str) -> None:
        """Close the run with ``status``: ``FINISHED``, ``FAILED`` or ``KILLED`` (stopped by a signal)."""


@dataclass(frozen=True)
class ComponentKind:
    """One kind of component: what the registry, the hooks, the CLI and the config call it."""

    name: str  # the kind, as in ``registry.get(kind, name)``
    base: type[Component]  # the abstract base class a registered class must subclass
    plural: str  # for people: ``pcm-run plugins`` tables, "installed ... are" messages
    hook: str  # the hookspec of pcm_core.hookspecs that registers this kind
    key: str  # the config key naming the component
    options_key: str  # the config key holding its options


COMPONENT_KINDS: tuple[ComponentKind, ...] = (
    ComponentKind("env", EnvBackend, "envs", "pcm_register_envs", "env.name", "env.options"),
    ComponentKind("policy", PolicyBackend, "policies", "pcm_register_policies", "policy.name", "policy.options"),
    ComponentKind("segmenter", PhaseSegmenter, "phase segmenters", "pcm_register_segmenters", "pcm.segmenter",
                  "pcm.segmenter_options"),
    ComponentKind("proxy", VarianceProxy, "variance proxies", "pcm_register_variance_proxies", "pcm.proxy",
                  "pcm.proxy_options"),
    ComponentKind("sampler", BudgetSampler, "budget samplers", "pcm_register_budget_samplers", "pcm.sampler",
                  "pcm.sampler_options"),
)
"""The five component kinds of a run, in the order ``pcm-run plugins`` lists them."""

TRACKER_KIND = ComponentKind(
    "tracker", TrackerBackend, "trackers", "pcm_register_trackers", "tracking.backends", "tracking.options"
)
"""Trackers: a run names a list of them (``tracking.backends``), each with options under ``tracking.options.<name>``."""

KINDS: dict[str, ComponentKind] = {kind.name: kind for kind in (*COMPONENT_KINDS, TRACKER_KIND)}
"""Component kind name -> its :class:`ComponentKind`."""
