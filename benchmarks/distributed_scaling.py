"""``distributed_scaling``: rollout throughput with 0 (in-process), 1 and 2 Ray rollout actors, and
learner step time with 1 and 2 data-parallel ranks (torch.distributed, gloo on CPU).

Rollouts: the same step (``groups x group_size`` trajectories of the embedded default) collected
``repeats`` times after one warm-up step; throughput is env steps per second of wall time.
Learner: one fixed rollout batch, split by groups over the ranks; each rank runs the
:class:`~pcm_core.learner.Learner` (DDP) update ``repeats`` times after one warm-up
update; the step time is the slowest rank's. Without Ray the rollout rows say so and the learner
rows are still measured.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import (
    build_env, build_policy, collect_batch, config_for, group_shard, machine, stats, table, write_outputs,
)
from pcm_core.plots import pyplot


def settings(quick: bool, args: argparse.Namespace | None = None) -> dict[str, Any]:
    s: dict[str, Any] = {
        "size": "1m", "groups": 4, "group_size": 4, "max_steps": 256, "budget": 12,
        "repeats": 3 if quick else 5, "workers": [0, 1, 2], "ranks": [1, 2], "seed": 0,
    }
    if args is not None:
        if getattr(args, "tiny", False):
            s.update(groups=2, group_size=2, max_steps=16, repeats=1, budget=2)
        if getattr(args, "repeats", None):
            s["repeats"] = args.repeats
        if getattr(args, "max_steps", None):
            s["max_steps"] = args.max_steps
    return s


def _overrides(s: dict[str, Any], workers: int = 0) -> list[str]:
    return [
        f"train.tasks_per_step={s['groups']}", f"train.group_size={s['group_size']}", f"env.options.max_steps={s['max_steps']}",
        f"distributed.rollout_workers={workers}", "train.threads=1", f"train.seed={s['seed']}",
    ]


def rollout_throughput(s: dict[str, Any]) -> dict[str, Any]:
    """Env steps per second for each number of rollout workers (0 = in the training process)."""
    from pcm_core.collectors import Collector
    from pcm_core.config import resolve_components

    rows: dict[str, Any] = {}
    for workers in s["workers"]:
        config = config_for("pcm", s["budget"], s["size"], overrides=_overrides(s, workers))
        policy = build_policy(config, torch.device("cpu"))
        env = build_env(config, s["groups"] * s["group_size"])
        rng, generator = np.random.default_rng(s["seed"]), torch.Generator().manual_seed(s["seed"])
        rollouts = None
        if workers:
            try:
                from pcm_core.ray_rollouts import RayRollouts
            except ImportError:
                rows[str(workers)] = {"skipped": "ray is not installed (pip install 'pcm-vla[distributed]')"}
                continue
            try:
                rollouts = RayRollouts(env, policy, config, rng, generator, resolve_components(config), log=lambda _: None)
            except Exception as exc:  # noqa: BLE001 - e.g. Ray missing: reported, not fatal
                rows[str(workers)] = {"skipped": f"{type(exc).__name__}: {str(exc).splitlines()[0]}"}
                continue
        collector = rollouts or Collector(env, policy, config, rng, generator)
        seconds, env_steps = [], []
        for repeat in range(s["repeats"] + 1):  # the first is a warm-up
            start = time.perf_counter()
            batch = collector.step_batch()
            elapsed = time.perf_counter() - start
            if repeat:
                seconds.append(elapsed)
                env_steps.append(float(batch.lengths.sum()) * policy.action_spec.chunk_size)
        if rollouts is not None:
            rollouts.close()
        env.close()
        rows[str(workers)] = {
            "step_s": stats(seconds),
            "env_steps_per_s": stats([n / t for n, t in zip(env_steps, seconds)]),
            "trajectories": s["groups"] * s["group_size"],
        }
    return rows


def _learner_rank(rank: int, world_size: int, s: dict[str, Any], folder: str) -> None:
    """One rank of the learner timing (``torch.multiprocessing.spawn`` entry point)."""
    import torch.distributed as dist

    from pcm_core.config import resolve_components
    from pcm_core.communicator import Communicator, Context
    from pcm_core.learner import Learner
    from pcm_core.parallel import DDP
    from pcm_core.profiling import StepTimer

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world_size)
    comm = Communicator(Context(rank, world_size, rank, active=True))
    config = config_for("pcm", s["budget"], s["size"], overrides=_overrides(s))
    torch.manual_seed(s["seed"])
    policy = build_policy(config, torch.device("cpu"))
    c = resolve_components(config)
    learner = Learner(
        policy, c["segmenter"].build(), c["proxy"].build(), c["sampler"].build(), config.pcm, config.train, comm, DDP()
    )
    batch = torch.load(f"{folder}/batch.pt", weights_only=False)
    shard = batch.select_trajectories(group_shard(batch.group_index, rank, world_size))
    seconds = []
    for repeat in range(s["repeats"] + 1):
        dist.barrier()
        start = time.perf_counter()
        learner.update(shard, StepTimer())
        elapsed = torch.tensor([time.perf_counter() - start if r == rank else 0.0 for r in range(world_size)])
        slowest = float(comm.sum(elapsed).max())
        if repeat:
            seconds.append(slowest)
    if rank == 0:
        torch.save({"seconds": seconds}, f"{folder}/times.pt")
    dist.destroy_process_group()


def learner_step_time(s: dict[str, Any]) -> dict[str, Any]:
    """Seconds per update of the same global batch on 1 and 2 ranks."""
    import torch.multiprocessing as mp

    config = config_for("pcm", s["budget"], s["size"], overrides=_overrides(s))
    policy = build_policy(config, torch.device("cpu"))
    env = build_env(config, s["groups"] * s["group_size"])
    batch, notes = collect_batch(policy, env, s["groups"], s["group_size"], s["seed"])
    env.close()
    rows: dict[str, Any] = {"batch": {"trajectories": batch.num_trajectories, "chunks": int(batch.lengths.sum()),
                                      "relabelled": notes["relabelled"]}}
    for world_size in s["ranks"]:
        with tempfile.TemporaryDirectory() as folder:
            torch.save(batch, f"{folder}/batch.pt")
            mp.spawn(_learner_rank, args=(world_size, s, folder), nprocs=world_size, join=True)
            result = torch.load(f"{folder}/times.pt", weights_only=False)
        rows[str(world_size)] = {"step_s": stats(result["seconds"])}
    return rows


MULTI_GPU = """\
## On a multi-GPU node

This machine has 2 shared CPU cores: 2 ranks or 2 actors compete with each other (and with
everything else running) for the same cores, so the figures above show the overhead of the
machinery (process start, gloo all-reduce, Ray object store), not a speed-up. What scaling needs:

- **Learner**: one rank per GPU (`pcm-run --nproc 8`, NCCL). Each rank backpropagates 1/W of the
  kept chunks, so forward/backward time drops about W-fold; DDP adds one all-reduce of the
  gradients per step, overlapped with the backward: 2 x (W-1)/W x gradient bytes over NVLink
  (OpenVLA-7B in bf16: about 2 x 14 GB x 7/8 = 25 GB, ~0.1 s at ~250 GB/s effective). FSDP2
  (`distributed.strategy=fsdp`) adds one all-gather of the weights per forward and per backward
  (about 1.5x DDP's traffic) and divides gradients and Adam state by W; the full weights are
  gathered again after each update so the policy can act in rollouts, so every GPU still holds
  them whole (docs/distributed.md, `distributed.strategy`).
- **Rollouts**: one actor per simulator process (`--rollout-workers N`, with `ray start` on each
  node); throughput grows with N until the policy's batched inference is the bottleneck. The
  weights are put into the object store once per update (the state dict's bytes, 14 GB for a 7B
  model in bf16) and read by each actor once: on one node that is a shared-memory copy; across
  nodes, a network transfer per node.
- **Batch**: `train.tasks_per_step` must be at least the number of ranks (whole groups per rank)
  and at least the number of actors.
"""


def run(quick: bool, device: str, out: Path, args: argparse.Namespace | None = None) -> dict[str, Any]:
    s = settings(quick, args)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    payload: dict[str, Any] = {"machine": machine(), "settings": s}
    payload["rollouts"] = rollout_throughput(s)
    payload["learner"] = learner_step_time(s)

    rollout_rows = []
    for workers, row in payload["rollouts"].items():
        label = "in-process" if workers == "0" else f"{workers} Ray actor(s)"
        if "skipped" in row:
            rollout_rows.append([label, "skipped", row["skipped"]])
        else:
            rollout_rows.append([label, f"{row['step_s']['median']:.2f}", f"{row['env_steps_per_s']['median']:.0f}"])
    learner_rows = [[r, f"{payload['learner'][r]['step_s']['median']:.3f}",
                     f"{payload['learner'][r]['step_s']['min']:.3f}-{payload['learner'][r]['step_s']['max']:.3f}"]
                    for r in map(str, s["ranks"])]
    markdown = "\n\n".join([
        "# distributed_scaling",
        f"tinyvla {s['size']}, {s['groups']} groups x {s['group_size']} trajectories, episodes of {s['max_steps']} env "
        f"steps, PCM budget {s['budget']}, {s['repeats']} timed repeats after a warm-up, medians. "
        f"Machine: {payload['machine']['cpu']}, {payload['machine']['cores']} cores.",
        "## Rollouts\n\n" + table(["rollouts", "s per step", "env steps/s"], rollout_rows),
        "## Learner\n\n" + table(["ranks", "s per update (median)", "min-max"], learner_rows),
        MULTI_GPU,
    ])

    fig, (left, right) = pyplot().subplots(1, 2, figsize=(9, 3.5))
    measured = [(w, r) for w, r in payload["rollouts"].items() if "skipped" not in r]
    left.bar([("in-proc" if w == "0" else f"{w} actor") for w, _ in measured], [r["env_steps_per_s"]["median"] for _, r in measured])
    left.set_ylabel("env steps / s")
    left.set_title("rollout throughput")
    right.bar([f"{r} rank" for r in s["ranks"]], [payload["learner"][str(r)]["step_s"]["median"] for r in s["ranks"]])
    right.set_ylabel("s per update")
    right.set_title("learner step time")
    fig.suptitle(f"distributed scaling on {payload['machine']['cores']} CPU cores")
    write_outputs(out, "distributed_scaling", payload, markdown, fig)
    return payload
