"""Phase segmenters: map every chunk ``[N, T]`` to a phase id in ``0..P-1`` (docs/algorithm.md, step 1)."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from pcm_core.errors import ConfigError
from pcm_core.interfaces import Options, PhaseSegmenter
from pcm_core.types import RolloutBatch


class PhaseOptions(Options):
    num_phases: int = Field(4, ge=1, description="P: number of phases (later phases are merged into the last)")


class _FixedPhases(PhaseSegmenter):
    Options = PhaseOptions

    @property
    def num_phases(self) -> int:
        return self.options.num_phases


class GripperSegmenter(_FixedPhases):
    """A new phase at each gripper open/close toggle: approach, grasp + transport, release, ...

    The gripper command of a chunk is the sign of its last executed action's gripper dimension
    (``actions[..., -1, -1] > 0`` means close). The phase of chunk ``t`` is the number of toggles
    between consecutive chunks ``0..t`` (the toggling chunk opens the new phase), capped at ``P - 1``.
    """

    def segment(self, batch: RolloutBatch) -> Tensor:
        closed = batch.actions[:, :, -1, -1] > 0  # gripper command per chunk  [N, T]
        toggles = closed[:, 1:] != closed[:, :-1]  # toggle at chunk t >= 1  [N, T-1]
        count = torch.cat([torch.zeros_like(closed[:, :1]), toggles], 1).long().cumsum(1)  # toggles so far  [N, T]
        return count.clamp(max=self.num_phases - 1)


class ProgressSegmenter(_FixedPhases):
    """``P`` equal slices of normalised time: phase of chunk ``t`` is ``floor(P * t / T_i)``."""

    def segment(self, batch: RolloutBatch) -> Tensor:
        steps = torch.arange(batch.max_chunks, device=batch.lengths.device)[None, :]  # t  [1, T]
        lengths = batch.lengths[:, None].clamp(min=1)  # T_i  [N, 1]
        return (steps * self.num_phases // lengths).clamp(max=self.num_phases - 1)  # [N, T]


class EnvSegmenter(_FixedPhases):
    """Phase labels the environment reports in ``batch.info["phase"]`` ``[N, T]``, clamped to ``0..P-1``."""

    def segment(self, batch: RolloutBatch) -> Tensor:
        if "phase" not in batch.info:
            raise ConfigError(
                "segmenter 'env' needs phase labels, but the environment reports none "
                f"(info keys: {sorted(batch.info)}).\n"
                "Fix: set pcm.segmenter to 'gripper' or 'progress', or use an env that reports info['phase']"
            )
        return batch.info["phase"].long().clamp(0, self.num_phases - 1)
