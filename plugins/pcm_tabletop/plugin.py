"""Registers the embedded default environment as env ``tabletop``."""

from __future__ import annotations

import pcm_core
from pcm_tabletop.env import TabletopEnv


@pcm_core.hookimpl
def pcm_register_envs(register):
    register("tabletop", TabletopEnv)
