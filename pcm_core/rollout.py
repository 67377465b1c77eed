"""Collect groups of trajectories: one batched policy call per chunk, K env steps per chunk."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from pcm_core.errors import PcmError
from pcm_core.interfaces import EnvBackend, PolicyBackend
from pcm_core.profiling import synchronize
from pcm_core.types import PolicyOutput, RolloutBatch

LOST_RETRIES = 2
"""Extra collections of the same groups when crashed env workers lost every trajectory."""


class EnvLostError(PcmError):
    """Crashed env workers lost every trajectory, again and again."""

    exit_code = 1


def obs_to_tensors(obs: dict[str, np.ndarray], device: torch.device) -> dict[str, Tensor]:
    """Environment arrays ``[B, ...]`` -> tensors on ``device`` (images stay uint8)."""
    return {key: torch.as_tensor(np.ascontiguousarray(value), device=device) for key, value in obs.items()}


def act_on_alive(
    policy: PolicyBackend,
    obs: dict[str, Tensor],
    instructions: Sequence[str],
    alive: np.ndarray,
    generator: torch.Generator | None,
    greedy: bool,
) -> PolicyOutput:
    """``policy.act`` on the envs still running (``alive`` ``[N]`` bool) only; the rows of finished
    envs are zeros (they become padding). Episodes that end at success leave fewer envs to act on."""
    if alive.all():
        return policy.act(obs, list(instructions), generator=generator, greedy=greedy)
    rows = np.flatnonzero(alive)
    index = torch.as_tensor(rows, device=next(iter(obs.values())).device)
    out = policy.act(
        {key: value[index] for key, value in obs.items()}, [instructions[i] for i in rows], generator=generator, greedy=greedy
    )

    def scatter(value: Tensor) -> Tensor:  # [n_alive, ...] -> [N, ...]
        full = value.new_zeros((len(alive), *value.shape[1:]))
        full[index.to(value.device)] = value
        return full

    return PolicyOutput(
        actions=scatter(out.actions),
        tokens=scatter(out.tokens),
        logprobs=scatter(out.logprobs),
        entropy=scatter(out.entropy),
        normalized_actions=None if out.normalized_actions is None else scatter(out.normalized_actions),
    )


@dataclass
class GroupSpec:
    """The start of every trajectory of a group: task variant and initial-state id."""

    task_id: int
    init_state: int


def collect(
    env: EnvBackend,
    policy: PolicyBackend,
    groups: Sequence[GroupSpec],
    group_size: int,
    generator: torch.Generator | None = None,
    greedy: bool = False,
) -> RolloutBatch:
    """Run ``len(groups) * group_size`` episodes (``env.num_envs`` of them) to the end.

    Trajectory ``i`` belongs to group ``i // group_size``; all members of a group start from the
    same task and initial state. Returns a :class:`RolloutBatch` with everything stored on CPU.
    Trajectories the env reports ``lost`` (a crashed env worker) are dropped (:func:`drop_lost`);
    when none survives, the groups are collected again (at most ``LOST_RETRIES`` times).
    """
    dropped = 0
    for _ in range(LOST_RETRIES + 1):
        batch, lost = _run_episodes(env, policy, groups, group_size, generator, greedy)
        if lost.any():
            batch = drop_lost(batch, lost, min(2, group_size))
        batch.dropped += dropped
        if batch.num_trajectories:
            return batch
        dropped = batch.dropped
    raise EnvLostError(
        f"every trajectory of {LOST_RETRIES + 1} collections in a row was lost to crashed env workers.\n"
        "Fix: see why the simulator crashes, e.g. run with env.workers=0 to get its traceback"
    )


def drop_lost(batch: RolloutBatch, lost: np.ndarray, min_members: int = 2) -> RolloutBatch:
    """Leave out the ``lost`` (``[N]`` bool) trajectories, and the survivors of any group left with
    fewer than ``min_members``; ``dropped`` counts all that were left out."""
    lost_t = torch.as_tensor(lost, dtype=torch.bool)
    ids, dense = torch.unique(batch.group_index, return_inverse=True)
    survivors = torch.zeros(len(ids), dtype=torch.long).index_add(0, dense, (~lost_t).long())  # [M]
    keep = ~lost_t & (survivors[dense] >= min_members)  # [N]
    kept = batch.select_trajectories(torch.nonzero(keep).squeeze(1))
    kept.dropped = batch.dropped + int((~keep).sum())
    return kept


def _run_episodes(
    env: EnvBackend,
    policy: PolicyBackend,
    groups: Sequence[GroupSpec],
    group_size: int,
    generator: torch.Generator | None,
    greedy: bool,
) -> tuple[RolloutBatch, np.ndarray]:
    """One batch of episodes as :func:`collect` describes, with nothing dropped, and the ``[N]``
    bool mask of lost trajectories."""
    num_trajectories = len(groups) * group_size
    if num_trajectories != env.num_envs:
        raise ValueError(f"{len(groups)} groups x {group_size} need {num_trajectories} envs, env has {env.num_envs}")
    chunk_size = policy.action_spec.chunk_size
    max_chunks = math.ceil(env.max_steps / chunk_size)
    task_ids = [g.task_id for g in groups for _ in range(group_size)]
    init_states = [g.init_state for g in groups for _ in range(group_size)]

    obs, instructions = env.reset(task_ids, init_states)
    alive = np.ones(num_trajectories, dtype=bool)
    lost = np.zeros(num_trajectories, dtype=bool)
    success = np.zeros(num_trajectories, dtype=bool)
    lengths = np.zeros(num_trajectories, dtype=np.int64)
    steps: list[dict[str, Tensor]] = []
    infos: list[dict[str, np.ndarray]] = []
    policy_s = 0.0

    for _ in range(max_chunks):
        if not alive.any():
            break
        obs_t = obs_to_tensors(obs, policy.device)
        started = time.perf_counter()
        out = act_on_alive(policy, obs_t, instructions, alive, generator, greedy)
        synchronize(policy.device)
        policy_s += time.perf_counter() - started
        lengths += alive
        results = env.step_chunk(out.actions.float().cpu().numpy())
        for result in results:
            success |= result.success & alive
            alive &= ~result.done
            if result.lost is not None:
                lost |= result.lost
        chunk_info = results[0].info
        obs = results[-1].obs
        steps.append(
            {
                "obs": {key: value.cpu() for key, value in obs_t.items()},
                "actions": out.stored_actions.float().cpu(),
                "tokens": out.tokens.cpu(),
                "logprobs": out.logprobs.float().cpu(),
                "entropy": out.entropy.float().cpu(),
            }
        )
        infos.append(chunk_info)

    def stack(values: list[Tensor]) -> Tensor:
        return torch.stack(values, dim=1)  # [N, T, ...]

    mask = torch.arange(len(steps))[None, :] < torch.as_tensor(lengths)[:, None]  # [N, T]

    def zero_padding(value: Tensor) -> Tensor:
        shape = mask.shape + (1,) * (value.dim() - 2)
        return value * mask.reshape(shape).to(value.dtype)

    batch = RolloutBatch(
        obs={key: zero_padding(stack([s["obs"][key] for s in steps])) for key in steps[0]["obs"]},
        instructions=list(instructions),
        actions=zero_padding(stack([s["actions"] for s in steps])),
        tokens=zero_padding(stack([s["tokens"] for s in steps])),
        old_logprobs=zero_padding(stack([s["logprobs"] for s in steps])),
        entropy=zero_padding(stack([s["entropy"] for s in steps])),
        lengths=torch.as_tensor(lengths),
        rewards=torch.as_tensor(success, dtype=torch.float32),
        group_index=torch.arange(num_trajectories) // group_size,
        info={
            key: zero_padding(stack([torch.as_tensor(np.asarray(i[key])) for i in infos]))
            for key in (infos[0] if infos else {})
        },
        horizon=max_chunks,
        policy_s=policy_s,
    )
    return batch, lost


def concat(batches: Sequence[RolloutBatch]) -> RolloutBatch:
    """Join batches of trajectories (group ids are renumbered to stay distinct)."""
    max_chunks = max(b.max_chunks for b in batches)

    def pad(value: Tensor) -> Tensor:
        missing = max_chunks - value.shape[1]
        if missing == 0:
            return value
        padding = torch.zeros((value.shape[0], missing) + value.shape[2:], dtype=value.dtype)
        return torch.cat([value, padding], dim=1)

    offsets = np.cumsum([0] + [int(b.group_index.max()) + 1 for b in batches[:-1]])
    return RolloutBatch(
        obs={k: torch.cat([pad(b.obs[k]) for b in batches]) for k in batches[0].obs},
        instructions=[text for b in batches for text in b.instructions],
        actions=torch.cat([pad(b.actions) for b in batches]),
        tokens=torch.cat([pad(b.tokens) for b in batches]),
        old_logprobs=torch.cat([pad(b.old_logprobs) for b in batches]),
        entropy=torch.cat([pad(b.entropy) for b in batches]),
        lengths=torch.cat([b.lengths for b in batches]),
        rewards=torch.cat([b.rewards for b in batches]),
        group_index=torch.cat([b.group_index + int(o) for b, o in zip(batches, offsets)]),
        info={k: torch.cat([pad(b.info[k]) for b in batches]) for k in batches[0].info},
        dropped=sum(b.dropped for b in batches),
        horizon=max(b.horizon_chunks for b in batches),
        policy_s=sum(b.policy_s for b in batches),
    )
