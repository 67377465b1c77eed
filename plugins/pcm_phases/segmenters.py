"""Phase segmenters: map every chunk ``[N, T]`` to a phase id in ``0..P-1`` (docs/algorithm.md, step 1)."""

from __future__ import annotations

import torch
from pydantic import Field, model_validator
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

    @property
    def phase_names(self) -> list[str]:
        """By the toggles before the chunk: ``0 toggles`` (the first gripper segment), ``1 toggle``,
        ..., ``P-1+ toggles`` (every later segment, merged)."""
        last = self.num_phases - 1
        return [f"{k} toggle{'' if k == 1 else 's'}" for k in range(last)] + [f"{last}+ toggles"]


class ProgressSegmenter(_FixedPhases):
    """``P`` equal slices of normalised time: phase of chunk ``t`` is ``floor(P * t / T_i)``."""

    def segment(self, batch: RolloutBatch) -> Tensor:
        steps = torch.arange(batch.max_chunks, device=batch.lengths.device)[None, :]  # t  [1, T]
        lengths = batch.lengths[:, None].clamp(min=1)  # T_i  [N, 1]
        return (steps * self.num_phases // lengths).clamp(max=self.num_phases - 1)  # [N, T]

    @property
    def phase_names(self) -> list[str]:
        """The slice of normalised time: ``0-25%``, ``25-50%``, ... for ``P`` = 4."""
        return [f"{100 * k // self.num_phases}-{100 * (k + 1) // self.num_phases}%" for k in range(self.num_phases)]


class EnvOptions(PhaseOptions):
    phase_names: list[str] | None = Field(
        None, description="names of the env's labels 0, 1, ... (those past P-1 merge into the last; an env that "
        "names its labels has them as phase_names); None: label 0, label 1, ...",
    )

    @model_validator(mode="after")
    def _a_name_per_phase(self) -> "EnvOptions":
        if self.phase_names is not None and len(self.phase_names) < self.num_phases:
            raise ValueError(f"phase_names has {len(self.phase_names)} names for num_phases={self.num_phases}")
        return self


class EnvSegmenter(_FixedPhases):
    """Phase labels the environment reports in ``batch.info["phase"]`` ``[N, T]``, clamped to ``0..P-1``."""

    Options = EnvOptions

    @property
    def phase_names(self) -> list[str]:
        """The option's names, labels past ``P-1`` joined into the last (``transport + place / release``)."""
        names = self.options.phase_names or [f"label {k}" for k in range(self.num_phases)]
        return [*names[: self.num_phases - 1], " + ".join(names[self.num_phases - 1 :])]

    def segment(self, batch: RolloutBatch) -> Tensor:
        if "phase" not in batch.info:
            raise ConfigError(
                "segmenter 'env' needs phase labels, but the environment reports none "
                f"(info keys: {sorted(batch.info)}).\n"
                "Fix: set pcm.segmenter to 'gripper' or 'progress', or use an env that reports info['phase']"
            )
        return batch.info["phase"].long().clamp(0, self.num_phases - 1)
