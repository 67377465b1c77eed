"""``tinyvla``: the :class:`~pcm_core.interfaces.PolicyBackend` around :mod:`pcm_tinyvla.modeling`.

The policy over one chunk is a product of L = K * D independent categoricals (one per action
token, ``softmax(logits / temperature)`` over 256 bins), all read from one forward pass, so the
chunk log-probability is the sum of the L token log-probabilities. ``transformers`` is imported
when a policy is built, never at registration.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from pcm_core.categorical import sample_tokens
from pcm_core.interfaces import Options, PolicyBackend
from pcm_core.types import ActionSpec, PolicyOutput
from pcm_tinyvla.binning import actions_to_bins, bins_to_actions

if TYPE_CHECKING:
    from pcm_tinyvla.modeling import TinyVLAConfig

SIZE_PRESETS: dict[str, dict[str, int]] = {
    "1m": {"hidden_size": 128, "num_layers": 4, "num_heads": 4, "intermediate_size": 384},
    "25m": {"hidden_size": 512, "num_layers": 8, "num_heads": 8, "intermediate_size": 1344},
    "100m": {"hidden_size": 768, "num_layers": 14, "num_heads": 12, "intermediate_size": 2048},
    "1b": {"hidden_size": 2048, "num_layers": 22, "num_heads": 16, "intermediate_size": 5632},
}
"""Trunk sizes by ``size`` option; parameters measured with the default K=4, D=7, 64x64 images,
patch 32, one query per action: 1.51M, 27.6M, 103M, 1.13B (see
``tests/tinyvla/test_tinyvla.py::test_size_presets``). ``1b`` is for GPU benchmarks."""

ARCHITECTURE_FIELDS: dict[str, str] = {
    "chunk_size": "chunk_size",
    "action_dim": "action_dim",
    "hidden_size": "hidden_size",
    "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads",
    "intermediate_size": "intermediate_size",
    "image_size": "image_size",
    "patch_size": "patch_size",
    "state_keys": "state_keys",
    "max_state_dim": "max_state_dim",
    "max_instruction_tokens": "max_instruction_tokens",
    "queries": "queries",
    "instruction_first": "instruction_first",
}
"""Option name -> ``TinyVLAConfig`` attribute, for every option that fixes the architecture."""


class TinyVLAOptions(Options):
    """Options of the ``tinyvla`` policy. Architecture options apply to a fresh (random) model;
    with ``path`` the saved config decides, and an explicitly set option that disagrees is an error."""

    path: str | None = Field(
        None,
        description="None: random init; else a folder written by save() or a Hugging Face hub id "
        "(loaded with from_pretrained, never trust_remote_code)",
    )
    size: Literal["1m", "25m", "100m", "1b"] = Field(
        "1m", description="preset for hidden_size/num_layers/num_heads/intermediate_size (explicit values win)"
    )
    chunk_size: int = Field(4, gt=0, description="K: actions per chunk")
    action_dim: int = Field(7, gt=0, description="D: numbers per action")
    hidden_size: int = Field(128, gt=0, description="transformer width")
    num_layers: int = Field(4, gt=0, description="Llama decoder layers")
    num_heads: int = Field(4, gt=0, description="attention heads (hidden_size must divide by it)")
    intermediate_size: int = Field(384, gt=0, description="SwiGLU MLP width")
    image_size: int = Field(64, gt=0, description="side of the square image the patch encoder sees")
    patch_size: int = Field(
        32, gt=0, description="side of one image patch (image_size must divide by it); 32 gives 4 patches at 64x64"
    )
    state_keys: list[str] = Field(
        default_factory=lambda: ["proprio", "state"],
        description="float observation keys read as one token each; absent keys are skipped",
    )
    max_state_dim: int = Field(32, gt=0, description="widest state vector; narrower ones are zero-padded")
    max_instruction_tokens: int = Field(12, gt=0, description="instructions are padded/truncated to this many tokens")
    queries: Literal["token", "action"] = Field(
        "action", description="action queries: one per token (OpenVLA-OFT, K*D) or one per action (K, a D*256-way head)"
    )
    instruction_first: bool = Field(
        False, description="the instruction opens the token sequence, so rollouts compute its keys and values once per "
        "instruction instead of at every chunk (a 64-episode rollout of the 1m model took 0.64x the time), but the "
        "instruction no longer attends to the image: the embedded default's warm start then reached 0.03-0.08 sampled "
        "success instead of 0.30"
    )
    temperature: float = Field(1.0, gt=0.0, description="softmax temperature of the action-token distribution")
    seed: int = Field(0, ge=0, description="seed of the random initialisation")

    @model_validator(mode="before")
    @classmethod
    def _apply_size_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and "size" in data:
            return {**SIZE_PRESETS.get(data["size"], {}), **data}
        return data

    @model_validator(mode="after")
    def _check_divisibility(self) -> "TinyVLAOptions":
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not divisible by patch_size {self.patch_size}")
        return self


class TinyVLAPolicy(PolicyBackend):
    """A small VLA for CPU: random init or loaded from ``options.path``.

    ``action_spec``, when given, sets K and D of a fresh model and must match a loaded one.
    """

    Options = TinyVLAOptions

    @classmethod
    def parameter_count(cls, options: TinyVLAOptions) -> int | None:
        """Decoder layers (attention 4 h^2, SwiGLU 3 h i) plus embeddings and heads (about 2000 h);
        None for a loaded model (its saved config decides)."""
        if options.path is not None:
            return None
        h, i = options.hidden_size, options.intermediate_size
        return options.num_layers * (4 * h * h + 3 * h * i) + 2000 * h

    def __init__(self, options: TinyVLAOptions, action_spec: ActionSpec | None = None) -> None:
        super().__init__(options, action_spec)
        from pcm_tinyvla.modeling import InstructionPrefixCache, TinyVLAForActionPrediction
        from pcm_tinyvla.tokenizer import build_tokenizer

        self.options: TinyVLAOptions = options
        if options.path is None:
            config = self.build_config(options, action_spec)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(options.seed)
                self.model = TinyVLAForActionPrediction(config)
            self.tokenizer = build_tokenizer(config.max_instruction_tokens)
        else:
            from transformers import PreTrainedTokenizerFast

            self.model = TinyVLAForActionPrediction.from_pretrained(options.path, trust_remote_code=False)
            self.tokenizer = PreTrainedTokenizerFast.from_pretrained(options.path, trust_remote_code=False)
            self._check_loaded(self.model.config, options, action_spec)
        self.model.eval()
        self._spec = ActionSpec(self.model.config.chunk_size, self.model.config.action_dim)
        self._instruction_cache: dict[str, tuple[Tensor, Tensor]] = {}
        self._prefix_cache = InstructionPrefixCache(self.model) if self.model.config.instruction_first else None

    @staticmethod
    def build_config(options: TinyVLAOptions, action_spec: ActionSpec | None = None) -> "TinyVLAConfig":
        """The architecture a fresh model gets from ``options`` (K, D from ``action_spec`` if given)."""
        from pcm_tinyvla.modeling import TinyVLAConfig

        values = {attr: getattr(options, name) for name, attr in ARCHITECTURE_FIELDS.items()}
        if action_spec is not None:
            values.update(chunk_size=action_spec.chunk_size, action_dim=action_spec.action_dim)
        return TinyVLAConfig(**values)

    @staticmethod
    def _check_loaded(config: "TinyVLAConfig", options: TinyVLAOptions, action_spec: ActionSpec | None) -> None:
        wanted = {name: getattr(options, name) for name in ARCHITECTURE_FIELDS if name in options.model_fields_set}
        if action_spec is not None:
            wanted.update(chunk_size=action_spec.chunk_size, action_dim=action_spec.action_dim)
        for name, value in wanted.items():
            saved = getattr(config, ARCHITECTURE_FIELDS[name])
            if (list(saved) if isinstance(saved, (list, tuple)) else saved) != value:
                raise ValueError(f"tinyvla at {options.path} has {name}={saved}, options ask for {value}")

    @property
    def module(self) -> nn.Module:
        return self.model

    @property
    def action_spec(self) -> ActionSpec:
        return self._spec

    @property
    def tokens_per_chunk(self) -> int:
        return self.model.config.tokens_per_chunk

    def encode_instructions(self, instructions: list[str]) -> tuple[Tensor, Tensor]:
        """Token ids and attention mask, each ``[B, T]`` long on the model's device.

        Each distinct string is tokenised once and cached; a batch is assembled by indexing.
        """
        new = [text for text in dict.fromkeys(instructions) if text not in self._instruction_cache]
        if new:
            encoded = self.tokenizer(
                new,
                padding="max_length",
                truncation=True,
                max_length=self.model.config.max_instruction_tokens,
                return_tensors="pt",
            )
            for i, text in enumerate(new):
                self._instruction_cache[text] = (encoded["input_ids"][i], encoded["attention_mask"][i])
        device = self.device
        ids = torch.stack([self._instruction_cache[text][0] for text in instructions]).to(device)
        mask = torch.stack([self._instruction_cache[text][1] for text in instructions]).to(device)
        return ids, mask

    def logits(self, obs: dict[str, Tensor], instructions: list[str], reuse_prefix: bool = False) -> Tensor:
        """``[B, L, 256]`` tempered action-token logits for observations ``[B, ...]``.

        ``reuse_prefix`` (no-grad calls only) takes the instruction's keys and values from the
        prefix cache when the model reads the instruction first; the logits are the same.
        """
        input_ids, attention_mask = self.encode_instructions(instructions)
        states = {key: obs[key] for key in self.model.config.state_keys if key in obs}
        prefix = None
        if reuse_prefix and self._prefix_cache is not None and not torch.is_grad_enabled():
            prefix = self._prefix_cache.for_batch(instructions, input_ids, attention_mask)
        logits = self.model(obs["image"], input_ids, attention_mask, states, prefix=prefix)  # [B, L, 256]
        return logits / self.options.temperature

    @torch.no_grad()
    def act(
        self,
        obs: dict[str, Tensor],
        instructions: list[str],
        generator: torch.Generator | None = None,
        greedy: bool = False,
    ) -> PolicyOutput:
        """Sample all L tokens of a chunk in parallel (or their argmax with ``greedy``).

        Returns actions ``[B, K, D]`` (bin centres), tokens ``[B, L]``, log-probs ``[B, L]`` and the
        mean token entropy ``[B]`` of the sampling distribution.
        """
        log_p = torch.log_softmax(self.logits(obs, instructions, reuse_prefix=True).float(), dim=-1)  # [B, L, 256]
        batch = log_p.shape[0]
        tokens = sample_tokens(log_p, generator, greedy)  # [B, L]
        logprobs = log_p.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # [B, L]
        entropy = -(log_p.exp() * log_p).sum(-1).mean(-1)  # [B]
        actions = bins_to_actions(tokens).reshape(batch, self._spec.chunk_size, self._spec.action_dim)
        return PolicyOutput(actions=actions, tokens=tokens, logprobs=logprobs, entropy=entropy)

    def log_probs(self, obs: dict[str, Tensor], instructions: list[str], tokens: Tensor) -> Tensor:
        """``[B, L]`` log-probabilities of ``tokens`` ``[B, L]`` (differentiable)."""
        log_p = torch.log_softmax(self.logits(obs, instructions).float(), dim=-1)  # [B, L, 256]
        return log_p.gather(-1, tokens.long().unsqueeze(-1)).squeeze(-1)

    def actions_to_tokens(self, actions: Tensor) -> Tensor:
        """``[B, K, D]`` normalised actions -> ``[B, L]`` bin ids (``-1 -> 0``, ``0 -> 128``, ``1 -> 255``)."""
        return actions_to_bins(actions).reshape(actions.shape[0], -1)

    def save(self, path: str) -> None:
        """``save_pretrained`` of model (``model.safetensors`` + ``config.json``) and tokenizer."""
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
