"""GRPO vs PCM side by side: ``python -m benchmarks <name> [--quick] [--device cpu|cuda] [--out DIR]``.

Every figure is a ratio measured in one process on one batch, with only the sampler differing,
configurations interleaved over repeats and reported as min / median / max.
"""

BENCHMARKS = ("grad_update", "activation_memory", "time_to_success", "ablations", "gradient_noise", "distributed_scaling",
              "warm_starts", "phase_signal")

BACKEND_BENCHMARKS = ("libero_env_throughput", "maniskill_env_throughput")
"""Benchmarks that need a backend extra (``[libero]``, ``[maniskill]``); run by name only, never by ``all``."""
