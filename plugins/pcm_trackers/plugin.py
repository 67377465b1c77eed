"""Registers the built-in trackers; TensorBoard and W&B import their packages only when a run starts."""

from __future__ import annotations

import pcm_core
from pcm_core.hookspecs import Register
from pcm_core.tracking import MLflowTracker
from pcm_trackers.tensorboard_tracker import TensorBoardTracker
from pcm_trackers.wandb_tracker import WandbTracker


@pcm_core.hookimpl
def pcm_register_trackers(register: Register) -> None:
    register("mlflow", MLflowTracker)
    register("tensorboard", TensorBoardTracker)
    register("wandb", WandbTracker)
