"""``openvla`` and ``openvla-oft``: :class:`~pcm_core.interfaces.PolicyBackend` s around
:class:`~pcm_openvla.modeling.PrismaticVLA`.

Both read the same sequence, OpenVLA's (``modeling_prismatic.py``):

    [<s>, image patches (n_images x N_p), proprio token (OFT), prompt tokens, suffix]

``openvla`` (K = 1): the suffix is the 7 action tokens, generated one by one under causal
attention; the log-probs of given tokens come from one teacher-forced pass.
``openvla-oft`` (K = 8 on LIBERO): the suffix is K x 7 placeholders with zero embeddings and the
stop token ``</s>``, read in one pass under bidirectional attention (OpenVLA-OFT's parallel
decoding); the logits at the last prompt token and the first K x 7 - 1 placeholders give the K x 7
action tokens at once, as OpenVLA-OFT's discrete-token variant does.

The RL policy of one action token is the LM's softmax restricted to the ``n_action_bins`` action ids
(the last 256 ids of the unpadded vocabulary), divided by ``temperature``; tokens are stored as
vocabulary ids and a chunk's log-probability is the sum of its token log-probabilities.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

from pcm_core.categorical import sample_tokens
from pcm_core.errors import ConfigError
from pcm_core.interfaces import Options, PolicyBackend
from pcm_core.types import ActionSpec, PolicyOutput

ACTION_DIM = 7


def libero_gripper(gripper: Tensor) -> Tensor:
    """OpenVLA's gripper output (1 open, 0 closed) as LIBERO's command (-1 open, +1 close), the
    published evaluation's ``normalize_gripper_action(binarize=True)`` then ``invert_gripper_action``."""
    return -torch.sign(2.0 * gripper - 1.0)


def libero_gripper_label(command: Tensor) -> Tensor:
    """LIBERO's gripper command (-1 open, +1 close) as OpenVLA's training label (1 open, 0 closed),
    the inverse of :func:`libero_gripper`: OpenVLA's LIBERO transform ``1 - clip(g, 0, 1)`` for
    binary commands, ``(1 - g) / 2`` in between (the side of 0.5 decides the command)."""
    return (1.0 - command) / 2.0


class LoraOptions(BaseModel):
    """LoRA adapters (peft); exported merged into the base weights, as the adapter alone, or both."""

    model_config = ConfigDict(extra="forbid")
    rank: int = Field(32, gt=0, description="adapter rank r (OpenVLA fine-tuning: 32)")
    alpha: int = Field(16, gt=0, description="lora_alpha (OpenVLA fine-tuning: min(r, 16))")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] | str = Field("all-linear", description="peft target modules; all-linear skips lm_head")
    export: Literal["merged", "adapter", "both"] = Field(
        "merged", description="save(): merged weights (the published layout), the adapter alone in peft's layout "
        "(adapter_config.json + adapter_model.safetensors, ~1% of the model), or both (the adapter in <folder>/adapter)"
    )


class OpenVLAOptions(Options):
    """Options of the ``openvla`` policy."""

    path: str | None = Field(
        None, description="checkpoint folder or hub id (e.g. openvla/openvla-7b); None: random init of `architecture`"
    )
    architecture: Literal["tiny", "7b"] = Field(
        "tiny", description="random model built when path is None: tiny (tests, CPU) or the published 7B shapes"
    )
    unnorm_key: str | None = Field(None, description="dataset whose norm_stats un-normalise actions")
    unnormalize_actions: bool = Field(
        False, description="act() returns actions in dataset units (norm_stats q01/q99) instead of [-1, 1]"
    )
    gripper: Literal["raw", "libero"] = Field(
        "raw", description="libero: the published LIBERO evaluation's gripper command, -sign(2 g - 1) (+1 closes)"
    )
    lora: LoraOptions | None = Field(None, description="LoRA adapters; None trains every parameter")
    adapter: str | None = Field(
        None, description="peft LoRA adapter folder applied on top of `path` (a run exported with lora.export=adapter); "
        "its rank, alpha and targets replace lora's, training goes on in the adapter"
    )
    gradient_checkpointing: bool = Field(False, description="recompute activations of Llama and ViT blocks")
    weights_dtype: Literal["float32", "bfloat16"] = Field("float32", description="dtype the weights are held in")
    init_device: str = Field("cpu", description="device the model is built on (cuda builds a 7B model fast)")
    image_keys: list[str] = Field(
        default_factory=lambda: ["image"], description="uint8 image observations, every one required (OpenVLA was "
        "trained on one third-person camera)"
    )
    center_crop: float | None = Field(
        None, gt=0.0, le=1.0, description="keep the centred crop with this area fraction (published LIBERO eval: 0.9)"
    )
    image_chain: Literal["published", "direct"] = Field(
        "published", description="published: each frame as the published training data and LIBERO evaluations "
        "prepare it (JPEG round trip, lanczos3 resize to the vision backbone's side, then center_crop as a "
        "crop-and-resize; pcm_openvla.processing.published_image); direct: center_crop cut from the frame, then one "
        "bicubic resize (cheaper, 3-4.5 grey levels off the published chain on LIBERO frames)"
    )
    temperature: float = Field(1.0, gt=0.0, description="softmax temperature of the action-token distribution")
    seed: int = Field(0, ge=0, description="seed of a random initialisation")
    max_shard_size_mb: float = Field(5000.0, gt=0.0, description="safetensors shard size on save")


class OpenVLAOFTOptions(OpenVLAOptions):
    """Options of the ``openvla-oft`` policy (adds the chunk, proprio input and action head)."""

    chunk_size: int = Field(8, gt=0, description="K: actions decoded in parallel per call (LIBERO: 8)")
    image_keys: list[str] = Field(
        default_factory=lambda: ["image", "wrist_image"], description="uint8 image observations, every one required "
        "(OpenVLA-OFT on LIBERO: the third-person and the wrist camera)"
    )
    proprio_key: str | None = Field("proprio", description="float observation fed to the proprio projector; None: off")
    proprio_dim: int = Field(8, gt=0, description="input width of a new proprio projector (LIBERO: 8)")
    action_head: Literal["tokens", "l1"] = Field(
        "tokens", description="tokens: discrete action tokens (RL); l1: the checkpoint's L1 regression head (eval only)"
    )
    train_proprio_projector: bool = Field(False, description="train the proprio projector fully (even with LoRA)")

    @model_validator(mode="after")
    def _adapter_export_keeps_what_was_trained(self) -> "OpenVLAOFTOptions":
        if self.train_proprio_projector and self.lora is not None and self.lora.export == "adapter":
            raise ValueError("lora.export=adapter leaves out the trained proprio projector: use lora.export=both")
        return self


class OpenVLAModule(nn.Module):
    """Everything the optimizer may update: ``vla`` (+ OFT's ``proprio_projector``, ``action_head``)."""

    def __init__(self, vla: nn.Module, proprio_projector: nn.Module | None, action_head: nn.Module | None) -> None:
        super().__init__()
        self.vla = vla
        self.proprio_projector = proprio_projector
        self.action_head = action_head


class OpenVLAPolicy(PolicyBackend):
    """OpenVLA: one action of 7 autoregressive tokens per call."""

    Options = OpenVLAOptions
    requires = ("peft",)
    extra = "openvla"
    unnorm_eps = 0.0

    def __init__(self, options: OpenVLAOptions, action_spec: ActionSpec | None = None) -> None:
        super().__init__(options, action_spec)
        from pcm_openvla import build

        self.options = options
        loaded = build.load(options) if options.path else build.random(options)
        self.config, self.tokenizer, self.source = loaded.config, loaded.tokenizer, loaded.folder
        build.check_image_count(loaded, options.image_keys)
        self.tokens = build.action_tokenizer(self.config)
        self.stats = build.action_stats(self.config, options.unnorm_key, required=options.unnormalize_actions)
        self.component_steps = loaded.component_steps
        vla = loaded.model
        if options.gradient_checkpointing:
            language_model = vla.language_model
            if hasattr(language_model, "activation_checkpointing_enable"):  # transformers >= 5
                language_model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                language_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            for featurizer in vla.vision_backbone.featurizers:
                featurizer.gradient_checkpointing = True
        self.lora = self._lora_settings(options)
        if self.lora is not None:
            from pcm_openvla.lora import apply_lora, load_adapter

            vla = apply_lora(vla, self.lora.rank, self.lora.alpha, self.lora.dropout, self.lora.target_modules)
            if options.adapter is not None:
                load_adapter(vla, Path(options.adapter))
        self.model = OpenVLAModule(vla, *self._extra_modules(loaded))
        self.model.to(getattr(torch, options.weights_dtype)).eval()
        if self.lora is not None:  # adapters (and a trained proprio projector) keep float32 for AdamW
            for parameter in self.model.parameters():
                if parameter.requires_grad:
                    parameter.data = parameter.data.float()
        self._spec = self._make_spec(action_spec)
        self._prompt_cache: dict[str, list[int]] = {}

    # --- construction helpers -------------------------------------------------------------

    @staticmethod
    def _lora_settings(options: OpenVLAOptions) -> LoraOptions | None:
        """``options.lora``, or with ``options.adapter`` the adapter's own rank, alpha and targets."""
        if options.adapter is None:
            return options.lora
        from pcm_openvla.lora import read_adapter_config

        saved = read_adapter_config(Path(options.adapter))
        export = options.lora.export if options.lora is not None else "merged"
        return LoraOptions(rank=saved["r"], alpha=saved["lora_alpha"], dropout=saved.get("lora_dropout", 0.0),
                           target_modules=saved["target_modules"], export=export)
    def _extra_modules(self, loaded: Any) -> tuple[nn.Module | None, nn.Module | None]:
        return None, None

    def autocast(self) -> torch.autocast:
        """bf16 autocast when the weights are held in bf16 (mixed with float32 adapters)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.options.weights_dtype == "bfloat16")

    def _make_spec(self, action_spec: ActionSpec | None) -> ActionSpec:
        spec = ActionSpec(1, ACTION_DIM)
        if action_spec is not None and (action_spec.chunk_size, action_spec.action_dim) != (1, ACTION_DIM):
            raise ValueError(f"openvla emits one 7-dim action per call, asked for {action_spec}")
        return spec

    # --- PolicyBackend ----------------------------------------------------------------------
    @property
    def module(self) -> nn.Module:
        return self.model

    @property
    def vla(self) -> nn.Module:
        return self.model.vla

    @property
    def action_spec(self) -> ActionSpec:
        return self._spec

    @property
    def tokens_per_chunk(self) -> int:
        return self._spec.chunk_size * self._spec.action_dim

    def prompt_ids(self, instruction: str) -> list[int]:
        """Token ids of OpenVLA's prompt for ``instruction``: ``<s> ... Out:`` then ``▁``."""
        if instruction not in self._prompt_cache:
            from pcm_openvla.processing import SPACE_TOKEN, prompt

            ids = list(self.tokenizer(prompt(instruction)).input_ids)
            space = self.tokenizer.convert_tokens_to_ids(SPACE_TOKEN)
            if ids[-1] != space:
                ids.append(space)
            self._prompt_cache[instruction] = ids
        return self._prompt_cache[instruction]

    def pixels(self, images: Tensor) -> list[Tensor]:
        """uint8 ``[B, H, W, 3]`` frames -> one normalised ``[B, 3, S_k, S_k]`` per featurizer,
        through ``options.image_chain``."""
        from pcm_openvla.processing import pixel_values, published_image

        specs, sizes, crop = self.config.vision_specs, self.config.image_sizes, self.options.center_crop
        if self.options.image_chain == "published":
            return pixel_values(published_image(images, sizes[0], crop), specs, sizes)
        return pixel_values(images, specs, sizes, crop)

    def prefix(self, obs: dict[str, Tensor], instructions: list[str]) -> tuple[Tensor, Tensor]:
        """Embeddings ``[B, N, h]`` and mask ``[B, N]`` of ``<s>``, images, (proprio), prompt.

        Prompts are left-padded after the images so every sequence ends at the same position.
        """
        vla, device = self.vla, self.device
        keys = self.options.image_keys
        missing = [key for key in keys if key not in obs]
        if missing:
            raise ConfigError(
                f"policy.options.image_keys = {keys}, but the env gives no {', '.join(repr(k) for k in missing)} "
                f"(it gives {', '.join(sorted(obs))}).\n"
                "Fix: turn that camera on in the env (LIBERO: env.options.wrist_image=true), or set "
                "policy.options.image_keys to the cameras the checkpoint was trained on, e.g. [image]"
            )
        images = torch.stack([obs[key] for key in keys], dim=1)  # [B, n, H, W, 3]
        batch = images.shape[0]
        pixels = self.pixels(images.flatten(0, 1))
        dtype = next(vla.language_model.parameters()).dtype
        visual = vla.image_tokens([p.to(device, dtype) for p in pixels], len(keys))  # [B, n N_p, h]
        extra = self.extra_tokens(obs, visual)  # [B, E, h]
        prompts = [self.prompt_ids(text)[1:] for text in instructions]  # without <s>
        width = max(len(p) for p in prompts)
        ids = torch.zeros(batch, width, dtype=torch.long)
        text_mask = torch.zeros(batch, width, dtype=torch.bool)
        for i, p in enumerate(prompts):
            ids[i, width - len(p):] = torch.tensor(p)
            text_mask[i, width - len(p):] = True
        bos = torch.full((batch, 1), self.prompt_ids(instructions[0])[0], dtype=torch.long)
        text = vla.embed_ids(torch.cat([bos, ids], dim=1).to(device))  # [B, 1 + T, h]
        embeds = torch.cat([text[:, :1], visual, extra, text[:, 1:]], dim=1)
        ones = torch.ones(batch, 1 + visual.shape[1] + extra.shape[1], dtype=torch.bool)
        return embeds, torch.cat([ones, text_mask], dim=1).to(device)

    def extra_tokens(self, obs: dict[str, Tensor], visual: Tensor) -> Tensor:
        """Tokens between the images and the prompt: none for OpenVLA."""
        return visual[:, :0]

    def action_log_probs(self, logits: Tensor) -> Tensor:
        """``[B, L, V]`` LM logits -> ``[B, L, n_bins]`` log-probs over the action ids."""
        actions = logits[..., self.tokens.first_id : self.tokens.vocab_end].float()
        return torch.log_softmax(actions / self.options.temperature, dim=-1)

    def _sample(self, log_p: Tensor, generator: torch.Generator | None, greedy: bool) -> Tensor:
        """Slots ``[B, L]`` drawn from ``log_p`` ``[B, L, n_bins]``."""
        return sample_tokens(log_p, generator, greedy)

    def token_log_probs(self, obs: dict[str, Tensor], instructions: list[str], tokens: Tensor) -> Tensor:
        """``[B, L, n_bins]`` action-token log-probs with the given ``tokens`` as teacher input."""
        with self.autocast():
            embeds, mask = self.prefix(obs, instructions)
            suffix = self.vla.embed_ids(tokens.long().to(self.device))  # [B, 7, h]
            ones = torch.ones(tokens.shape, dtype=torch.bool, device=self.device)
            logits, _ = self.vla.run(torch.cat([embeds, suffix], 1), torch.cat([mask, ones], 1), False, tokens.shape[1] + 1)
        return self.action_log_probs(logits[:, :-1])

    @torch.no_grad()
    def act(
        self,
        obs: dict[str, Tensor],
        instructions: list[str],
        generator: torch.Generator | None = None,
        greedy: bool = False,
    ) -> PolicyOutput:
        """Generate the 7 tokens of one action token by token (causal, KV cache, as ``predict_action``)."""
        slots, log_ps = [], []

        def pick(logits: Tensor) -> Tensor:
            log_p = self.action_log_probs(logits[:, None])  # [B, 1, n_bins]
            slots.append(self._sample(log_p, generator, greedy))  # [B, 1]
            log_ps.append(log_p)
            return slots[-1][:, 0] + self.tokens.first_id

        with self.autocast():
            embeds, mask = self.prefix(obs, instructions)
            self.vla.generate(embeds, mask, ACTION_DIM, pick)
        return self._output(torch.cat(log_ps, 1), torch.cat(slots, 1), embeds.shape[0])

    def _output(self, log_p: Tensor, slots: Tensor, batch: int, actions: Tensor | None = None) -> PolicyOutput:
        tokens = slots + self.tokens.first_id  # [B, L] vocabulary ids
        if actions is None:
            actions = self.tokens.to_actions(tokens).reshape(batch, self._spec.chunk_size, ACTION_DIM)
        scaled = self._gripper_to_env(actions)  # [-1, 1] scale, the env's gripper command
        return PolicyOutput(
            actions=self._unnormalize(scaled),
            tokens=tokens,
            logprobs=log_p.gather(-1, slots.unsqueeze(-1)).squeeze(-1),
            entropy=-(log_p.exp() * log_p).sum(-1).mean(-1),
            normalized_actions=scaled if self.options.unnormalize_actions else None,
        )

    def _gripper_to_env(self, actions: Tensor) -> Tensor:
        """``[..., 7]`` model values with the gripper as the env's command (``gripper=libero``)."""
        if self.options.gripper != "libero":
            return actions
        actions = actions.clone()
        actions[..., -1] = libero_gripper(actions[..., -1])
        return actions

    def _unnormalize(self, actions: Tensor) -> Tensor:
        """``[..., 7]`` [-1, 1] values in dataset units (``unnormalize_actions``)."""
        if not self.options.unnormalize_actions:
            return actions
        from pcm_openvla.action_tokens import unnormalize

        return unnormalize(actions, self.stats, self.unnorm_eps)

    def env_actions_to_values(self, actions: Tensor) -> Tensor:
        """``[..., 7]`` actions as ``act`` returns them -> the model's [-1, 1] values (the inverse of
        ``act``'s un-normalisation and gripper mapping)."""
        if self.options.unnormalize_actions:
            from pcm_openvla.action_tokens import normalize

            actions = normalize(actions, self.stats, self.unnorm_eps)
        if self.options.gripper == "libero":
            actions = actions.clone()
            actions[..., -1] = libero_gripper_label(actions[..., -1])
        return actions

    def log_probs(self, obs: dict[str, Tensor], instructions: list[str], tokens: Tensor) -> Tensor:
        """``[B, L]`` log-probabilities of vocabulary ids ``tokens`` ``[B, L]`` (differentiable)."""
        log_p = self.token_log_probs(obs, instructions, tokens)  # [B, L, n_bins]
        return log_p.gather(-1, self.tokens.slot(tokens.to(log_p.device)).unsqueeze(-1)).squeeze(-1)

    def actions_to_tokens(self, actions: Tensor) -> Tensor:
        """``[B, K, D]`` actions in the env's units (as ``act`` returns them) -> ``[B, K * D]``
        vocabulary ids: :meth:`env_actions_to_values`, then OpenVLA's digitize."""
        return self.tokens.to_ids(self.env_actions_to_values(actions)).reshape(actions.shape[0], -1)

    def save(self, path: str) -> None:
        """The published layout: config.json, safetensors (+ index), tokenizer, dataset_statistics.json;
        with LoRA, ``lora.export`` chooses merged weights, the adapter alone (peft's layout) or both."""
        from pcm_openvla import build, checkpoint

        folder = checkpoint.prepare_folder(path)
        if self.lora is not None and self.lora.export != "merged":
            from pcm_openvla.lora import save_adapter

            where = folder if self.lora.export == "adapter" else folder / "adapter"
            save_adapter(self.vla, where, self.lora.rank, self.lora.alpha, self.lora.dropout, self.options.path)
            if self.lora.export == "adapter":
                return
        if self.lora is not None:
            from pcm_openvla.lora import merged_state_dict

            state = merged_state_dict(self.vla)
        else:
            state = self.vla.state_dict()
        checkpoint.save_weights(state, folder, int(self.options.max_shard_size_mb * 2**20))
        config = copy.deepcopy(self.config.raw)
        config["torch_dtype"] = self.options.weights_dtype
        config[build.IMAGE_COUNT_FIELD] = len(self.options.image_keys)
        checkpoint.write_config(config, folder)
        self.tokenizer.save_pretrained(str(folder))
        self.save_components(folder)
        checkpoint.copy_extras(self.source, folder)

    def save_components(self, folder: Path) -> None:
        """OpenVLA has no component files."""


class OpenVLAOFTPolicy(OpenVLAPolicy):
    """OpenVLA-OFT: K x 7 action tokens decoded in parallel, proprio token, one pass per chunk."""

    Options = OpenVLAOFTOptions
    unnorm_eps = 1e-8

    def _extra_modules(self, loaded: Any) -> tuple[nn.Module | None, nn.Module | None]:
        from pcm_openvla import build

        options: OpenVLAOFTOptions = self.options
        build.check_proprio_projector(loaded, options.proprio_key)
        projector = build.proprio_projector(loaded, options) if options.proprio_key else None
        if projector is not None:
            projector.requires_grad_(options.train_proprio_projector or self.lora is None)
        head = build.l1_head(loaded, options) if options.action_head == "l1" else None
        if head is not None:
            head.requires_grad_(False)
        return projector, head

    def _make_spec(self, action_spec: ActionSpec | None) -> ActionSpec:
        spec = ActionSpec(self.options.chunk_size, ACTION_DIM)
        if action_spec is not None and action_spec.action_dim != ACTION_DIM:
            raise ValueError(f"openvla-oft emits 7-dim actions, asked for {action_spec}")
        return spec

    def extra_tokens(self, obs: dict[str, Tensor], visual: Tensor) -> Tensor:
        """The proprio token ``[B, 1, h]`` (OFT appends it after the image patches)."""
        projector = self.model.proprio_projector
        if projector is None:
            return visual[:, :0]
        key = self.options.proprio_key
        if key not in obs:
            raise ValueError(f"openvla-oft reads proprio from observation '{key}', which the env does not give; "
                             f"set policy.options.proprio_key to one of {sorted(obs)} or to null")
        proprio, width = obs[key].float(), projector.proprio_dim
        if proprio.shape[-1] > width:
            raise ValueError(f"observation '{key}' has {proprio.shape[-1]} numbers, the proprio projector takes {width}")
        stats = self.stats_all.get("proprio")
        if stats is not None and len(stats["q01"]) == proprio.shape[-1]:
            from pcm_openvla.action_tokens import normalize

            proprio = normalize(proprio, stats)
        elif stats is not None:
            warnings.warn(
                f"observation '{key}' has {proprio.shape[-1]} numbers but the proprio statistics of "
                f"'{self.options.unnorm_key}' have {len(stats['q01'])}: the proprio goes in unnormalised. "
                "Fix: set policy.options.unnorm_key to the env's dataset, or proprio_key to null",
                stacklevel=2,
            )
        proprio = torch.nn.functional.pad(proprio, (0, width - proprio.shape[-1]))  # narrower vectors: zeros
        return projector(proprio.to(self.device, visual.dtype)).unsqueeze(1)

    @property
    def stats_all(self) -> dict:
        """All statistics of the ``unnorm_key`` dataset (``action``, maybe ``proprio``)."""
        from pcm_openvla import build

        return build.dataset_stats(self.config, self.options.unnorm_key) or {}

    def parallel_pass(self, obs: dict[str, Tensor], instructions: list[str]) -> tuple[Tensor, Tensor]:
        """Logits ``[B, L, V]`` and hidden states ``[B, L, h]`` of the L = K x 7 action positions."""
        with self.autocast():
            embeds, mask = self.prefix(obs, instructions)
            batch, length = embeds.shape[0], self.tokens_per_chunk
            stop = torch.full((batch, 1), self.tokenizer.eos_token_id, dtype=torch.long, device=self.device)
            suffix = torch.cat([embeds.new_zeros(batch, length, embeds.shape[2]), self.vla.embed_ids(stop)], dim=1)
            ones = torch.ones(batch, length + 1, dtype=torch.bool, device=self.device)
            logits, hidden = self.vla.run(torch.cat([embeds, suffix], 1), torch.cat([mask, ones], 1), True, length + 2)
        return logits[:, :length], hidden[:, :length]

    def token_log_probs(self, obs: dict[str, Tensor], instructions: list[str], tokens: Tensor) -> Tensor:
        logits, _ = self.parallel_pass(obs, instructions)
        return self.action_log_probs(logits)

    @torch.no_grad()
    def act(
        self,
        obs: dict[str, Tensor],
        instructions: list[str],
        generator: torch.Generator | None = None,
        greedy: bool = False,
    ) -> PolicyOutput:
        """All K x 7 tokens of a chunk from one pass (or the L1 head's actions with ``action_head=l1``)."""
        logits, hidden = self.parallel_pass(obs, instructions)
        log_p = self.action_log_probs(logits)  # [B, L, n_bins]
        batch = log_p.shape[0]
        if self.model.action_head is not None:
            with self.autocast():
                actions = self.model.action_head(hidden, self._spec.chunk_size).float().clamp(-1.0, 1.0)
            slots = self.tokens.slot(self.tokens.to_ids(actions).reshape(batch, -1))
            return self._output(log_p, slots, batch, actions)
        return self._output(log_p, self._sample(log_p, generator, greedy), batch)

    def log_probs(self, obs: dict[str, Tensor], instructions: list[str], tokens: Tensor) -> Tensor:
        if self.model.action_head is not None:
            from pcm_openvla.checkpoint import CheckpointFolderError

            raise CheckpointFolderError(
                "openvla-oft with action_head=l1 acts with the continuous L1 head, which has no log-probabilities.\n"
                "Fix: set policy.options.action_head=tokens for RL (the LM head's action tokens); l1 is for evaluation"
            )
        return super().log_probs(obs, instructions, tokens)

    def save_components(self, folder: Path) -> None:
        """``proprio_projector--<step>_checkpoint.pt`` and ``action_head--<step>_checkpoint.pt``."""
        for name in ("proprio_projector", "action_head"):
            module = getattr(self.model, name)
            if module is not None:
                step = self.component_steps.get(name, 0)
                torch.save(module.state_dict(), folder / f"{name}--{step}_checkpoint.pt")
