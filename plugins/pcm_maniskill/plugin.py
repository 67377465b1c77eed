"""Registers ManiSkill3 tasks as env ``maniskill``."""

from __future__ import annotations

import pcm_core
from pcm_maniskill.env import ManiSkillEnv


@pcm_core.hookimpl
def pcm_register_envs(register):
    register("maniskill", ManiSkillEnv)
