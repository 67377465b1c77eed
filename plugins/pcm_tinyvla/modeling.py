"""TinyVLA: a small Vision-Language-Action transformer built from ``transformers`` parts.

One forward pass reads the sequence

    [image patch tokens (N_p), state tokens (N_s), instruction tokens (T), action queries (Q)]

(or, with ``instruction_first``, the instruction before the image, which lets rollouts reuse
its keys and values) through a ``LlamaModel`` (causal attention, RoPE), and a dedicated head over
the Q query positions gives the 256-way logits of every action token of the chunk at once
(OpenVLA-OFT's parallel decoding: the queries are learned embeddings, not previously sampled
tokens, so all L = K * D tokens come from one pass). ``queries="token"`` has one query per
action token (Q = L, a 256-way head, OpenVLA-OFT's layout); ``queries="action"`` has one query
per action (Q = K) and a ``D x 256``-way head, the same family of distributions from a sequence
24 tokens shorter at K=4, D=7. Token ids are bin ids ``0..255`` (see :mod:`pcm_tinyvla.binning`);
there is no shared language-model vocabulary. The instruction embedding table is the Llama ``embed_tokens``.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import DynamicCache, LlamaConfig, LlamaModel, PretrainedConfig, PreTrainedModel
from transformers import initialization as init

from pcm_tinyvla.binning import NUM_BINS
from pcm_tinyvla.tokenizer import VOCABULARY


class TinyVLAConfig(PretrainedConfig):
    """Architecture of :class:`TinyVLAForActionPrediction` (saved as ``config.json``).

    Attributes:
        chunk_size: K actions per chunk. action_dim: D numbers per action.
        hidden_size, num_hidden_layers, num_attention_heads, intermediate_size: the Llama trunk.
        image_size: side of the square RGB input the patch encoder sees (other sizes are resized).
        patch_size: side of one image patch; ``(image_size / patch_size) ** 2`` patch tokens.
        state_keys: float observation keys read as one token each, in this order (absent keys are
            skipped). max_state_dim: widest state vector; narrower ones are zero-padded.
        vocab_size: instruction vocabulary size. max_instruction_tokens: T, fixed padded length.
        num_bins: action bins per token (256).
        queries: ``"token"`` (one query per action token) or ``"action"`` (one per action).
        instruction_first: the instruction opens the sequence, so its keys and values depend on
            the instruction alone and :class:`InstructionPrefixCache` reuses them across chunks.
            The default (False) reads it after the image and states, so that it attends to them.
    """

    model_type = "tinyvla"

    chunk_size: int = 4
    action_dim: int = 7
    hidden_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 384
    image_size: int = 64
    patch_size: int = 8
    state_keys: tuple[str, ...] | list[str] = ("proprio", "state")
    max_state_dim: int = 32
    vocab_size: int = len(VOCABULARY)
    max_instruction_tokens: int = 16
    num_bins: int = NUM_BINS
    queries: str = "token"
    instruction_first: bool = False
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-6

    @property
    def num_patches(self) -> int:
        """N_p, image patch tokens per observation."""
        return (self.image_size // self.patch_size) ** 2

    @property
    def tokens_per_chunk(self) -> int:
        """L = K * D action tokens per chunk."""
        return self.chunk_size * self.action_dim

    @property
    def num_queries(self) -> int:
        """Q, action-query positions in the sequence: L (``queries="token"``) or K (``"action"``)."""
        if self.queries not in ("token", "action"):
            raise ValueError(f"queries must be 'token' or 'action', got {self.queries!r}")
        return self.tokens_per_chunk if self.queries == "token" else self.chunk_size

    def llama_config(self) -> LlamaConfig:
        """The configuration of the Llama trunk (a KV cache only for the instruction prefix)."""
        return LlamaConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_attention_heads,
            max_position_embeddings=self.num_patches
            + len(self.state_keys)
            + self.max_instruction_tokens
            + self.num_queries,
            initializer_range=self.initializer_range,
            rms_norm_eps=self.rms_norm_eps,
            pad_token_id=0,
            use_cache=False,
            attn_implementation="sdpa",
        )


class TinyVLAForActionPrediction(PreTrainedModel):
    """Image + states + instruction -> logits ``[B, L, 256]`` over the bins of every action token."""

    config_class = TinyVLAConfig
    config: TinyVLAConfig
    base_model_prefix = "tinyvla"
    main_input_name = "images"
    _supports_sdpa = True

    def __init__(self, config: TinyVLAConfig) -> None:
        super().__init__(config)
        hidden = config.hidden_size
        self.patch_embed = nn.Conv2d(3, hidden, kernel_size=config.patch_size, stride=config.patch_size)
        self.patch_position = nn.Parameter(torch.zeros(config.num_patches, hidden))
        self.state_proj = nn.ModuleDict({key: nn.Linear(config.max_state_dim, hidden) for key in config.state_keys})
        self.action_queries = nn.Parameter(torch.zeros(config.num_queries, hidden))  # [Q, h]
        self.llm = LlamaModel(config.llama_config())
        self.action_head = nn.Linear(hidden, config.tokens_per_chunk // config.num_queries * config.num_bins)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, TinyVLAForActionPrediction):
            init.normal_(module.patch_position, mean=0.0, std=self.config.initializer_range)
            init.normal_(module.action_queries, mean=0.0, std=self.config.initializer_range)

    def embed_image(self, images: Tensor) -> Tensor:
        """uint8 ``[B, H, W, 3]`` RGB -> patch tokens ``[B, N_p, hidden]``.

        Pixels are scaled to [-1, 1]; a different ``H, W`` is bilinearly resized to ``image_size``.
        """
        size = self.config.image_size
        pixels = images.permute(0, 3, 1, 2).to(self.patch_embed.weight.dtype) / 127.5 - 1.0  # [B, 3, H, W]
        if pixels.shape[-2:] != (size, size):
            pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False)
        patch, side = self.config.patch_size, size // self.config.patch_size
        pixels = pixels.reshape(-1, 3, side, patch, side, patch).permute(0, 2, 4, 1, 3, 5)  # [B, rows, cols, 3, p, p]
        weight = self.patch_embed.weight.flatten(1)  # [hidden, 3 p p]: the conv with stride = kernel, as one matmul
        patches = F.linear(pixels.reshape(pixels.shape[0], side * side, -1), weight, self.patch_embed.bias)  # [B, N_p, hidden]
        return patches + self.patch_position

    def embed_states(self, states: dict[str, Tensor], batch: int) -> Tensor:
        """One token per present key of ``config.state_keys``: ``[B, N_s, hidden]`` (N_s may be 0).

        Each value is ``[B, S_key]`` float with ``S_key <= max_state_dim``.
        """
        tokens = []
        for key in self.config.state_keys:
            if key not in states:
                continue
            value = states[key].to(self.patch_embed.weight.dtype)
            width = value.shape[-1]
            if width > self.config.max_state_dim:
                raise ValueError(
                    f"observation '{key}' has {width} numbers, more than max_state_dim={self.config.max_state_dim}"
                )
            tokens.append(self.state_proj[key](F.pad(value, (0, self.config.max_state_dim - width))))
        if not tokens:
            return self.action_queries.new_zeros(batch, 0, self.config.hidden_size)
        return torch.stack(tokens, dim=1)

    def forward(
        self,
        images: Tensor,
        input_ids: Tensor,
        attention_mask: Tensor,
        states: dict[str, Tensor] | None = None,
        prefix: DynamicCache | None = None,
    ) -> Tensor:
        """Action-token logits of one chunk per observation.

        Args:
            images: uint8 ``[B, H, W, 3]``.
            input_ids: ``[B, T]`` instruction token ids. attention_mask: ``[B, T]`` 1 = real token.
            states: float ``[B, S_key]`` per state key (missing keys are skipped).
            prefix: with ``instruction_first``, the instruction's keys and values for these B rows
                (:meth:`InstructionPrefixCache.for_batch`); the instruction is then not recomputed.
                The cache is extended in place: use it for one call.

        Returns:
            ``[B, L, num_bins]`` unnormalised logits, ``L = K * D`` in (action, dimension) order.
        """
        batch = images.shape[0]
        image_tokens = self.embed_image(images)  # [B, N_p, h]
        state_tokens = self.embed_states(states or {}, batch)  # [B, N_s, h]
        queries = self.action_queries.expand(batch, -1, -1)  # [B, Q, h]
        observation = torch.cat([image_tokens, state_tokens], dim=1)  # [B, N_p + N_s, h]
        if prefix is not None and not self.config.instruction_first:
            raise ValueError("an instruction prefix cache needs instruction_first=True")
        text_positions = torch.arange(input_ids.shape[1], device=input_ids.device)  # [T]
        if prefix is None:  # the padding every row has is left out; the other tokens keep their positions
            real = int(attention_mask.sum(1).max())
            input_ids, attention_mask, text_positions = input_ids[:, :real], attention_mask[:, :real], text_positions[:real]
        text_tokens = self.llm.embed_tokens(input_ids) if prefix is None else None  # [B, T', h]; else in the cache
        segments = [  # (tokens, attention mask, positions) in sequence order
            (text_tokens, attention_mask, text_positions),
            (observation, attention_mask.new_ones(batch, observation.shape[1]), None),
            (queries, attention_mask.new_ones(batch, queries.shape[1]), None),
        ]
        if not self.config.instruction_first:
            segments[0], segments[1] = segments[1], segments[0]
        sequence = torch.cat([tokens for tokens, _, _ in segments if tokens is not None], dim=1)  # [B, N', h]
        mask = torch.cat([segment_mask for _, segment_mask, _ in segments], dim=1)  # [B, N']: the cached prefix included
        positions = self.sequence_positions(segments, self.config.max_instruction_tokens, input_ids.device)  # [N']
        if prefix is not None:
            positions = positions[prefix.get_seq_length() :]
        cache = {CACHE_ARGUMENT: prefix} if prefix is not None else {}
        hidden = self.llm(  # [B, N' (- T), h]
            inputs_embeds=sequence, attention_mask=mask, position_ids=positions[None].expand(batch, -1), **cache
        ).last_hidden_state
        logits = self.action_head(hidden[:, -queries.shape[1] :])  # [B, Q, L / Q * num_bins]
        return logits.reshape(batch, self.config.tokens_per_chunk, self.config.num_bins)  # [B, L, num_bins]

    @staticmethod
    def sequence_positions(segments: list[tuple[Tensor | None, Tensor, Tensor | None]], text_length: int, device: torch.device) -> Tensor:
        """``[N']`` position of every token: each segment starts where it would with the instruction
        padded to ``text_length`` tokens, so dropping padding leaves the other positions, and the logits, as they are."""
        parts, start = [], 0
        for _, segment_mask, text_positions in segments:
            length = segment_mask.shape[1]
            parts.append(start + (text_positions if text_positions is not None else torch.arange(length, device=device)))
            start += text_length if text_positions is not None else length
        return torch.cat(parts)

CACHE_ARGUMENT = "cache" if "cache" in inspect.signature(LlamaModel.forward).parameters else "past_key_values"
"""The name ``LlamaModel.forward`` gives its KV cache argument in the installed transformers."""


class InstructionPrefixCache:
    """The keys and values of each instruction's tokens, computed once per instruction.

    With ``instruction_first``, attention is causal and the instruction comes first, so its keys
    and values depend only on the instruction text and the weights: a rollout that asks for the
    same instruction at every chunk computes them once. Any change of the trunk's weights (an
    optimizer step, a loaded state dict, a move to another device) empties the cache.
    """

    def __init__(self, model: TinyVLAForActionPrediction) -> None:
        if not model.config.instruction_first:
            raise ValueError("the instruction prefix cache needs a model with instruction_first=True")
        self.model = model
        self.entries: dict[str, list[tuple[Tensor, Tensor]]] = {}  # text -> per layer (keys, values) [heads, T, d]
        self.weights_version: tuple[tuple[object, ...], ...] = ()

    def _current_version(self) -> tuple[tuple[object, ...], ...]:
        """Identity, in-place-update counter, device and dtype of every trunk parameter."""
        return tuple((id(p), p._version, p.device, p.dtype) for p in self.model.llm.parameters())

    def for_batch(self, instructions: list[str], input_ids: Tensor, attention_mask: Tensor) -> DynamicCache:
        """A fresh cache holding the instruction prefix of every row (``input_ids`` ``[B, T]``)."""
        version = self._current_version()
        if version != self.weights_version:
            self.entries.clear()
            self.weights_version = version
        first_row = {text: row for row, text in reversed(list(enumerate(instructions)))}
        missing = [text for text in first_row if text not in self.entries]
        if missing:
            rows = torch.tensor([first_row[text] for text in missing], device=input_ids.device)
            cache = DynamicCache()
            self.model.llm(
                inputs_embeds=self.model.llm.embed_tokens(input_ids[rows]),
                attention_mask=attention_mask[rows],
                use_cache=True,
                **{CACHE_ARGUMENT: cache},
            )
            layers = [(layer.keys, layer.values) for layer in cache.layers]  # each [U, heads, T, d]
            for i, text in enumerate(missing):
                self.entries[text] = [(keys[i], values[i]) for keys, values in layers]
        batch = DynamicCache()
        for layer in range(len(self.entries[instructions[0]])):
            keys = torch.stack([self.entries[text][layer][0] for text in instructions])  # [B, heads, T, d]
            values = torch.stack([self.entries[text][layer][1] for text in instructions])
            batch.update(keys, values, layer)
        return batch
