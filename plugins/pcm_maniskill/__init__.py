"""ManiSkill3 tasks as an environment backend (``env: maniskill``); see ``docs/maniskill.md``.

Nothing here imports ManiSkill or SAPIEN; they load when :class:`ManiSkillEnv` is built.
"""

from pcm_maniskill.env import ManiSkillEnv, ManiSkillOptions

__all__ = ["ManiSkillEnv", "ManiSkillOptions"]
