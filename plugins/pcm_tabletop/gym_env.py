"""Single-env gymnasium API over :class:`~pcm_tabletop.env.TabletopEnv` (registered as ``pcm/Tabletop-v0``)."""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from pcm_tabletop.env import PROPRIO_DIM, STATE_DIM, TabletopEnv, TabletopOptions


class TabletopGymEnv(gymnasium.Env):
    """One tabletop episode at a time; the vector env with ``num_envs=1`` does the work.

    ``gymnasium.make("pcm/Tabletop-v0", image_size=32, ...)`` passes keyword arguments to
    :class:`TabletopOptions`. ``reset(seed=..., options={"task_id": i, "init_state": s})`` picks
    the task variant and layout (each drawn from the seeded generator when left out).
    Observations are the vector env's for one env: ``image`` uint8 ``[H, W, 3]``, ``proprio``
    float32 ``[5]`` and, with ``state_obs``, ``state`` float32 ``[12]``. ``reward`` is
    ``float(success)`` every step (success stays True once reached). ``terminated`` is True at
    the first success when ``end_on_success`` (the default), else always False; ``truncated`` is
    True when ``max_steps`` ends an episode that did not terminate.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, render_mode: str | None = None, **options: Any) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.render_mode = render_mode
        self.env = TabletopEnv(TabletopOptions(**options), num_envs=1)
        size = self.env.options.image_size
        observation = {
            "image": spaces.Box(0, 255, (size, size, 3), np.uint8),
            "proprio": spaces.Box(-1.0, 1.0, (PROPRIO_DIM,), np.float32),
        }
        if self.env.options.state_obs:
            observation["state"] = spaces.Box(-2.0, 2.0, (STATE_DIM,), np.float32)  # offsets span [-2, 2]
        self.observation_space = spaces.Dict(observation)
        self.action_space = spaces.Box(-1.0, 1.0, (7,), np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        self.env.rng = self.np_random  # expert noise follows the gymnasium seed
        options = options or {}
        task_id = int(options.get("task_id", self.np_random.integers(self.env.num_tasks)))
        init_state = int(options.get("init_state", self.np_random.integers(2**31 - 1)))
        obs, instructions = self.env.reset([task_id], [init_state])
        info = {"instruction": instructions[0], "task_id": task_id, "init_state": init_state}
        return self._first(obs), info

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        result = self.env.step(np.asarray(action, dtype=np.float32).reshape(1, 7))
        info = {key: value[0].item() for key, value in result.info.items()}
        success = bool(result.success[0])
        info["success"] = success
        terminated = success and self.env.options.end_on_success
        return self._first(result.obs), float(success), terminated, bool(result.done[0]) and not terminated, info

    def expert_action(self) -> np.ndarray:
        """``[7]`` the scripted expert's action (noise from the ``expert_noise`` option)."""
        return self.env.expert_actions()[0]

    def render(self) -> np.ndarray | None:
        """``[render_size, render_size, 3]`` uint8 frame with ``render_mode="rgb_array"``, else None."""
        if self.render_mode == "rgb_array":
            return self.env.render(0)
        return None

    @staticmethod
    def _first(obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {key: value[0] for key, value in obs.items()}
