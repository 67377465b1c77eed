"""Registers the LIBERO backend as env ``libero`` (LIBERO itself is imported when it is built)."""

from __future__ import annotations

import pcm_core
from pcm_libero.env import LiberoEnv


@pcm_core.hookimpl
def pcm_register_envs(register):
    register("libero", LiberoEnv)
