"""Phases by gripper contact: 0 before the first grasp, 1 while holding, 2 after the release."""

from pydantic import Field

import pcm_core
from pcm_core.interfaces import Options, PhaseSegmenter


class ContactOptions(Options):
    num_phases: int = Field(3, ge=1, description="P: phases kept (later ones merge into the last)")


class ContactSegmenter(PhaseSegmenter):
    """Reads ``batch.info["gripper"]`` ``[N, T]`` (1 closed / in contact, 0 open)."""

    Options = ContactOptions

    @property
    def num_phases(self) -> int:
        return self.options.num_phases

    def segment(self, batch):
        closed = batch.info["gripper"] > 0.5  # in contact at chunk t  [N, T]
        contact = closed.long().cumsum(1) > 0  # at or after the first contact  [N, T]
        released = (contact & ~closed).long().cumsum(1) > 0  # at or after the first reopen  [N, T]
        return (contact.long() + released.long()).clamp(max=self.num_phases - 1)  # phase id  [N, T]


@pcm_core.hookimpl
def pcm_register_segmenters(register):
    register("contact", ContactSegmenter)
