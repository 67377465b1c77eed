"""SFT warm start: behaviour cloning on scripted demonstrations, cached on disk.

GRPO learns nothing from groups whose outcomes are all equal, so RL starts from a policy that
succeeds part of the time. The cloned weights are cached under ``train.sft.cache_dir``, keyed by
everything that determines them, so a second run skips this stage.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from pcm_core.config import RunConfig, resolve_components
from pcm_core.errors import ConfigError
from pcm_core.interfaces import EnvBackend, PolicyBackend


CACHE_VERSION = 2
"""Part of the cache key, raised whenever the same settings start to clone other weights (2: the
demonstrations no longer depend on the number of envs), so a stale cached warm start is never loaded."""


def cache_path(config: RunConfig) -> Path:
    """Folder of the cached warm start for this env, policy, SFT settings and seed.

    Env and policy enter with their validated options (defaults filled in), so an option written
    out at its default value keeps the same warm start; where the envs run (``env.workers``) is
    left out: a deterministic expert gives the same demonstrations in worker processes, and how
    many envs run them does not matter (:func:`collect_demonstrations`). An expert
    that draws random numbers (tabletop's ``expert_noise`` > 0) draws them from each worker's own
    stream, so its demonstrations depend on ``env.workers`` while the key does not.
    """
    components = resolve_components(config, check_installed=False)
    sft = config.train.sft.model_dump(exclude={"cache_dir", "seed"})
    key = {
        kind: {"name": components[kind].name, "options": components[kind].options.model_dump(mode="json")}
        for kind in ("env", "policy")
    }
    key.update(sft=sft, seed=sft_seed(config), version=CACHE_VERSION)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return Path(config.train.sft.cache_dir).expanduser() / digest


def sft_seed(config: RunConfig) -> int:
    """The seed of the warm start: ``train.sft.seed``, or ``train.seed`` when that is None."""
    return config.train.seed if config.train.sft.seed is None else config.train.sft.seed


def collect_demonstrations(
    env: EnvBackend,
    chunk_size: int,
    episodes: int,
    seed: int,
    execution_noise: float = 0.0,
    gripper_flip_prob: float = 0.0,
) -> tuple[dict[str, Tensor], list[str], Tensor]:
    """Run the env's scripted expert; keep the chunks of successful episodes up to their success.

    With ``execution_noise`` the env executes the expert's action plus Gaussian noise while the
    clean expert action is the label, so the demonstrations cover the states a slightly wrong
    policy reaches and show how to recover from them. ``gripper_flip_prob`` does the same for the
    gripper command (the last action dimension): a policy that opens or closes at the wrong
    moment reaches states that clean demonstrations never show.

    The demonstrations depend on ``seed`` and ``episodes``, not on ``env.num_envs``: the tasks and
    initial states of all episodes are drawn first, episode ``e`` draws its noise from its own
    generator (seeded by ``(seed, e)``), the episodes run ``num_envs`` at a time (rows past the
    last episode repeat it and are left out), and the chunks come out in (episode, chunk) order.
    So a benchmark with 8 envs and ``pcm-run`` with 64 clone the same warm start, as the cache
    key (:func:`cache_path`) assumes.

    Returns observations at each chunk start (each ``[S, ...]``), their ``S`` instructions and the
    expert's action chunks ``[S, K, D]``.
    """
    rng = np.random.default_rng(seed)
    all_tasks = rng.integers(0, env.num_tasks, episodes)  # [E]
    all_inits = rng.integers(0, 2**31 - 1, episodes)  # [E]
    obs_parts: dict[str, list[np.ndarray]] = {}
    texts: list[str] = []
    action_parts: list[np.ndarray] = []
    num_chunks = math.ceil(env.max_steps / chunk_size)
    width = env.num_envs
    for first in range(0, episodes, width):
        ids = np.minimum(np.arange(first, first + width), episodes - 1)  # [B] episode of each row
        real = np.arange(first, first + width) < episodes  # [B] False: a repeat, left out
        noise = [np.random.default_rng([seed, int(e)]) for e in ids]  # each episode's own generator
        obs, instructions = env.reset(all_tasks[ids].tolist(), all_inits[ids].tolist())
        episode_obs: list[dict[str, np.ndarray]] = []
        episode_actions: list[np.ndarray] = []
        success = np.zeros(width, dtype=bool)
        solved_at = np.full(width, num_chunks)  # first chunk that ends in success
        for t in range(num_chunks):
            chunk = []
            start_obs = {k: v.copy() for k, v in obs.items()}
            for _ in range(chunk_size):
                action = env.expert_actions()
                if action is None:
                    raise ConfigError(
                        f"env '{type(env).__name__}' has no scripted expert for the SFT warm start.\n"
                        "Fix: set train.sft.enabled=false and pass a pretrained policy.options.path"
                    )
                executed = action.astype(np.float64)
                for row, generator in enumerate(noise):
                    if execution_noise > 0:
                        executed[row] += generator.normal(0.0, execution_noise, action.shape[1])
                    if generator.random() < gripper_flip_prob:
                        executed[row, -1] = -executed[row, -1]
                result = env.step(np.clip(executed, -1.0, 1.0).astype(np.float32))
                success |= result.success
                chunk.append(action)
                obs = result.obs
            solved_at = np.where(success & (solved_at == num_chunks), t, solved_at)
            episode_obs.append(start_obs)
            episode_actions.append(np.stack(chunk, axis=1))  # [B, K, D]
            if success.all():
                break
        for row in np.flatnonzero(success & real):  # episode order; what happens after success does not matter
            steps = range(int(solved_at[row]) + 1)
            for key in episode_obs[0]:
                obs_parts.setdefault(key, []).append(np.stack([episode_obs[t][key][row] for t in steps]))
            action_parts.append(np.stack([episode_actions[t][row] for t in steps]))
            texts.extend([instructions[row]] * len(steps))
    if not action_parts:
        return {}, [], torch.zeros(0)
    obs_tensors = {key: torch.as_tensor(np.concatenate(parts)) for key, parts in obs_parts.items()}
    actions = torch.as_tensor(np.concatenate(action_parts), dtype=torch.float32).clamp(-1, 1)
    return obs_tensors, texts, actions


def behaviour_clone(
    policy: PolicyBackend,
    obs: dict[str, Tensor],
    instructions: list[str],
    actions: Tensor,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    on_epoch: Callable[[int, float], Any] | None = None,
) -> float:
    """Minimise the token cross-entropy ``-log pi(tokens(a*) | o)`` over the demonstrations.

    AdamW with the learning rate decayed from ``lr`` to 0 on a cosine over all updates: the last
    updates, at a small rate, sharpen the action-token distributions the grasp needs.
    """
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(policy.module.parameters(), lr=lr)
    updates = epochs * math.ceil(len(actions) / batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 0.5 * (1.0 + math.cos(math.pi * i / updates)))
    targets = policy.actions_to_tokens(actions)  # [S, L]
    device = policy.device
    policy.module.train()
    mean_loss = float("nan")
    for epoch in range(epochs):
        order = torch.randperm(len(targets), generator=generator)
        total, count = 0.0, 0
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            batch_obs = {k: v[index].to(device) for k, v in obs.items()}
            batch_text = [instructions[i] for i in index.tolist()]
            loss = -policy.log_probs(batch_obs, batch_text, targets[index].to(device)).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(index)
            count += len(index)
        mean_loss = total / max(count, 1)
        if on_epoch is not None:
            on_epoch(epoch, mean_loss)
    policy.module.eval()
    return mean_loss


def probe_cache(folder: Path) -> None:
    """Make sure the warm start can be cached in ``folder`` before any work goes into it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write_probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"warm-start cache '{folder}' is not writable: {exc.strerror or exc}.\n"
            "Fix: --set train.sft.cache_dir=DIR with a folder you can write"
        ) from None


def warm_start(policy: PolicyBackend, env: EnvBackend, config: RunConfig, log: Callable[[str], Any] = print) -> Path:
    """Load the cached warm start for this config, or build and cache it. Returns its folder."""
    folder = cache_path(config)
    weights = folder / "model.safetensors"
    if weights.is_file():
        policy.module.load_state_dict(load_file(str(weights), device=str(policy.device)))
        log(f"warm start: loaded cached SFT weights from {folder}")
        return folder
    sft = config.train.sft
    probe_cache(folder)  # fail now, not after the cloning
    log(f"warm start: collecting {sft.demos} scripted demonstrations")
    obs, instructions, actions = collect_demonstrations(
        env, policy.action_spec.chunk_size, sft.demos, sft_seed(config), sft.execution_noise, sft.gripper_flip_prob
    )
    if len(actions) == 0:
        raise ConfigError("warm start: the scripted expert produced no successful demonstration.\nFix: check the env options")
    log(f"warm start: behaviour cloning on {len(actions)} chunks for {sft.epochs} epochs")
    behaviour_clone(
        policy, obs, instructions, actions, sft.epochs, sft.lr, sft.batch_size, sft_seed(config),
        on_epoch=lambda epoch, loss: log(f"  epoch {epoch + 1}/{sft.epochs}: loss {loss:.3f}"),
    )
    folder.mkdir(parents=True, exist_ok=True)
    # one temporary file per process: two runs building the same warm start at once each
    # write their own file, and the rename makes whichever lands last the cached one, whole
    temporary = folder / f"model.safetensors.{os.getpid()}.tmp"
    save_file({k: v.detach().contiguous().cpu() for k, v in policy.module.state_dict().items()}, str(temporary))
    temporary.replace(weights)
    return folder
