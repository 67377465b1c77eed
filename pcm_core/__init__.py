"""pcm-vla: Probabilistic Chunk Masking for GRPO fine-tuning of Vision-Language-Action policies."""

from pcm_core.hookspecs import hookimpl

__all__ = ["hookimpl", "__version__"]
__version__ = "0.1.0"
