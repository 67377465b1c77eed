"""Registers the ``tinyvla`` policy (importing this module does not import ``transformers``)."""

import pcm_core
from pcm_tinyvla.policy import TinyVLAPolicy


@pcm_core.hookimpl
def pcm_register_policies(register):
    """``tinyvla``: :class:`~pcm_tinyvla.policy.TinyVLAPolicy`."""
    register("tinyvla", TinyVLAPolicy)
