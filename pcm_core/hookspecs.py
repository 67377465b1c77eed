"""Plugin hooks of project ``pcm``. Plugins implement them with ``@pcm_core.hookimpl``."""

from __future__ import annotations

from typing import Any, Callable

import pluggy

hookspec = pluggy.HookspecMarker("pcm")
hookimpl = pluggy.HookimplMarker("pcm")

Register = Callable[[str, type], None]


@hookspec
def pcm_register_envs(register: Register) -> None:
    """Register environment backends: ``register("tabletop", TabletopEnv)`` with an
    :class:`~pcm_core.interfaces.EnvBackend` subclass."""


@hookspec
def pcm_register_policies(register: Register) -> None:
    """Register policy backends (VLAs): :class:`~pcm_core.interfaces.PolicyBackend` subclasses."""


@hookspec
def pcm_register_segmenters(register: Register) -> None:
    """Register phase segmenters: :class:`~pcm_core.interfaces.PhaseSegmenter` subclasses."""


@hookspec
def pcm_register_variance_proxies(register: Register) -> None:
    """Register variance proxies: :class:`~pcm_core.interfaces.VarianceProxy` subclasses."""


@hookspec
def pcm_register_budget_samplers(register: Register) -> None:
    """Register budget samplers: :class:`~pcm_core.interfaces.BudgetSampler` subclasses."""


@hookspec
def pcm_register_trackers(register: Register) -> None:
    """Register experiment trackers: :class:`~pcm_core.interfaces.TrackerBackend` subclasses, enabled
    by name in ``tracking.backends``."""


@hookspec
def pcm_register_presets(register: Callable[..., None]) -> None:
    """Register presets for (env, policy) pairs: ``register(Preset(name, env, policy, config_path,
    needs_cuda, needs))`` with a :class:`~pcm_core.presets.Preset`; ``pcm-run --env E --policy P``
    without ``--config`` starts from its config."""


@hookspec
def pcm_on_run_start(config: Any, run_dir: str) -> None:
    """Called once before the first training step with the resolved ``RunConfig``."""


@hookspec
def pcm_on_step_end(step: int, metrics: dict[str, float]) -> None:
    """Called after every training step with that step's metrics (names as logged to MLflow)."""


@hookspec
def pcm_on_run_end(summary: dict[str, Any]) -> None:
    """Called once when training finishes or a signal (SIGINT, SIGTERM) stops it after a step, with
    the run summary ``{"run_dir", "history", "stopped"}`` (``stopped`` True for a signal stop).
    Not called when the run fails with an error (including too many skipped updates)."""
