"""Built-in plugin ``tinyvla``: a small Vision-Language-Action model from ``transformers`` parts.

Random init or a local/hub checkpoint, CPU-friendly sizes (``size`` option: 1m, 25m, 100m
parameters) and a 1b size for GPU benchmarks. See :mod:`pcm_tinyvla.policy` for the backend and
:mod:`pcm_tinyvla.modeling` for the network.
"""
