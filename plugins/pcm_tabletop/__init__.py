"""The embedded default environment: tabletop pick-and-place in pure numpy (see ``pcm_tabletop.env``).

Importing this package registers the gymnasium id ``pcm/Tabletop-v0`` (single env,
:class:`pcm_tabletop.gym_env.TabletopGymEnv`); the entry point is a string, so nothing heavy is
imported until ``gymnasium.make``. Without importing it first, use
``gymnasium.make("pcm_tabletop:pcm/Tabletop-v0")``.
"""

from gymnasium.envs.registration import register, registry

from pcm_tabletop.env import TabletopEnv, TabletopOptions

GYM_ID = "pcm/Tabletop-v0"

if GYM_ID not in registry:
    register(id=GYM_ID, entry_point="pcm_tabletop.gym_env:TabletopGymEnv")

__all__ = ["GYM_ID", "TabletopEnv", "TabletopOptions"]
