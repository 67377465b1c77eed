"""Registers the built-in segmenters, variance proxies and budget samplers."""

from __future__ import annotations

import pcm_core
from pcm_core.hookspecs import Register
from pcm_phases.proxies import EntropyProxy, SuccessFailureProxy, UniformProxy
from pcm_phases.samplers import AllSampler, PCMSampler, TopKSampler, UniformSampler
from pcm_phases.segmenters import EnvSegmenter, GripperSegmenter, ProgressSegmenter


@pcm_core.hookimpl
def pcm_register_segmenters(register: Register) -> None:
    register("gripper", GripperSegmenter)
    register("progress", ProgressSegmenter)
    register("env", EnvSegmenter)


@pcm_core.hookimpl
def pcm_register_variance_proxies(register: Register) -> None:
    register("success_failure", SuccessFailureProxy)
    register("uniform", UniformProxy)
    register("entropy", EntropyProxy)


@pcm_core.hookimpl
def pcm_register_budget_samplers(register: Register) -> None:
    register("pcm", PCMSampler)
    register("uniform", UniformSampler)
    register("all", AllSampler)
    register("topk", TopKSampler)
