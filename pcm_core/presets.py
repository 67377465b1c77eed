"""Presets: what ``pcm-run --env E --policy P`` means when no config file is given.

A plugin ships a preset for an (env, policy) pair it knows, as a YAML run config in its package
(``pcm_register_presets``). ``pcm-run --env libero --policy openvla-oft`` then starts from that
file (the published checkpoint or a token-trained RL start, its ``unnorm_key``, crop, learning
rate, batch shape, env workers, bf16 on CUDA) and says which preset it took; ``--set`` still wins.
A preset that needs a GPU says so in two lines on a machine without one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pcm_core.errors import ConfigError


@dataclass(frozen=True)
class Preset:
    """``config``: a YAML run config; ``needs``: what it needs to run (None: any machine)."""

    name: str
    env: str
    policy: str
    config: Path
    needs_cuda: bool = False
    needs: str = ""


def check_machine(preset: Preset | None) -> None:
    """Refuse, in two lines, a preset that needs a GPU on a machine without one (None: no preset)."""
    if preset is None or not preset.needs_cuda:
        return
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(
            f"preset {preset.name} needs {preset.needs}; this machine has no CUDA GPU.\n"
            f"Fix: run it on a GPU machine, or name a config for this one (e.g. --config configs/libero_tinyvla.yaml)"
        )
