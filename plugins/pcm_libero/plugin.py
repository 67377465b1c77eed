"""Registers the LIBERO backend as env ``libero`` (LIBERO itself is imported when it is built) and
the presets of ``pcm-run --env libero --policy openvla`` / ``openvla-oft``."""

from __future__ import annotations

from pathlib import Path

import pcm_core
from pcm_core.presets import Preset
from pcm_libero.env import LiberoEnv

PRESETS = Path(__file__).resolve().parent / "presets"
NEEDS = "a CUDA GPU with about 80 GB (7B weights in bf16, LoRA, 64 LIBERO simulators) and the [openvla] extra"


@pcm_core.hookimpl
def pcm_register_envs(register):
    register("libero", LiberoEnv)


@pcm_core.hookimpl
def pcm_register_presets(register):
    register(Preset("libero-openvla", "libero", "openvla", PRESETS / "libero_openvla.yaml", needs_cuda=True, needs=NEEDS))
    register(Preset("libero-openvla-oft", "libero", "openvla-oft", PRESETS / "libero_openvla_oft.yaml", needs_cuda=True,
                    needs=NEEDS))
