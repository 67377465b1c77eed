"""Registers ``openvla`` and ``openvla-oft`` (importing this module imports neither transformers nor peft)."""

import pcm_core
from pcm_openvla.policy import OpenVLAOFTPolicy, OpenVLAPolicy


@pcm_core.hookimpl
def pcm_register_policies(register):
    """``openvla``: :class:`OpenVLAPolicy`; ``openvla-oft``: :class:`OpenVLAOFTPolicy`."""
    register("openvla", OpenVLAPolicy)
    register("openvla-oft", OpenVLAOFTPolicy)
