"""``maniskill_env_throughput``: ManiSkill3 env steps per second through the ``maniskill`` backend.

CPU (``physx_cpu``): 1 and 2 processes, each stepping one PickCube-v1 env with seeded random
actions, with state observations (``image: false``) and with a 128x128 RGB camera. Each process
builds and warms up its env, then all start stepping together (a barrier); the rate is all
processes' steps over the span from the first start to the last finish. Building is excluded.
GPU (``physx_cuda``, when torch sees one): one process, one GPU-parallel batch of 64, 256 and 1024
envs. Needs the [maniskill] extra and a Vulkan driver (docs/maniskill.md).
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import machine, stats, table, write_outputs
from pcm_core.plots import pyplot

TASK = "PickCube-v1"


def settings(quick: bool, device: str, args: argparse.Namespace | None = None) -> dict[str, Any]:
    import torch

    s: dict[str, Any] = {
        "task": TASK,
        "image_size": 128,
        "processes": [1, 2],
        "observations": ["state", "rgb"],
        "steps": {"state": 100 if quick else 500, "rgb": 20 if quick else 100},
        "warmup_steps": 5,
        "repeats": 1 if quick else 3,
        "gpu_envs": [64, 256, 1024] if device != "cpu" and torch.cuda.is_available() else [],
        "gpu_steps": 20 if quick else 100,
        "seed": 0,
    }
    if args is not None:
        if getattr(args, "repeats", None):
            s["repeats"] = args.repeats
        if getattr(args, "tiny", False):
            s.update(processes=[1], observations=["state"], steps={"state": 3, "rgb": 3}, warmup_steps=1, gpu_envs=[])
    return s


def _options(observation: str, image_size: int, backend: str) -> dict[str, Any]:
    return {"tasks": [TASK], "sim_backend": backend, "image": observation == "rgb", "image_size": image_size}


def step_env(options: dict[str, Any], num_envs: int, steps: int, warmup: int, seed: int, barrier: Any) -> tuple[int, float, float]:
    """Build a ``maniskill`` env, warm it up, wait at ``barrier``, then step it ``steps`` times with
    random actions (a finished batch is reset). Returns (env steps, monotonic start, monotonic end)."""
    from pcm_maniskill.env import ManiSkillEnv, ManiSkillOptions

    env = ManiSkillEnv(ManiSkillOptions(**options), num_envs=num_envs, seed=seed)
    rng = np.random.default_rng(seed)
    episode = 0

    def reset() -> None:
        nonlocal episode
        env.reset([0] * num_envs, [seed * 1000 + episode * num_envs + i for i in range(num_envs)])
        episode += 1

    reset()
    for _ in range(warmup):
        env.step(rng.uniform(-1, 1, (num_envs, 7)).astype(np.float32))
    reset()
    if barrier is not None:
        barrier.wait()
    start = time.monotonic()
    for _ in range(steps):
        if env.step(rng.uniform(-1, 1, (num_envs, 7)).astype(np.float32)).done.all():
            reset()
    end = time.monotonic()
    env.close()
    return steps * num_envs, start, end


def _worker(options, steps, warmup, seed, barrier, results) -> None:
    results.put(step_env(options, 1, steps, warmup, seed, barrier))


def cpu_rate(observation: str, processes: int, s: dict[str, Any], repeat: int) -> float:
    """Env steps per second of ``processes`` spawned processes with one ``physx_cpu`` env each."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(processes), context.Queue()
    options = _options(observation, s["image_size"], "physx_cpu")
    steps = s["steps"][observation]
    workers = [
        context.Process(target=_worker, args=(options, steps, s["warmup_steps"], s["seed"] + 100 * repeat + p, barrier, results))
        for p in range(processes)
    ]
    for worker in workers:
        worker.start()
    done = [results.get(timeout=1800) for _ in workers]
    for worker in workers:
        worker.join()
    total = sum(d[0] for d in done)
    return total / (max(d[2] for d in done) - min(d[1] for d in done))


def run(quick: bool, device: str, out: Path, args: argparse.Namespace | None = None) -> dict[str, Any]:
    s = settings(quick, device, args)
    info = machine()
    samples: dict[str, list[float]] = {}
    for repeat in range(s["repeats"]):
        for observation in s["observations"]:
            for processes in s["processes"]:
                key = f"cpu/{observation}/{processes}p"
                rate = cpu_rate(observation, processes, s, repeat)
                samples.setdefault(key, []).append(rate)
                print(f"  {key}: {rate:.1f} env steps/s", flush=True)
        for num_envs in s["gpu_envs"]:
            for observation in s["observations"]:
                key = f"gpu/{observation}/{num_envs}envs"
                total, start, end = step_env(
                    _options(observation, s["image_size"], "physx_cuda"), num_envs, s["gpu_steps"], s["warmup_steps"], s["seed"], None
                )
                samples.setdefault(key, []).append(total / (end - start))
                print(f"  {key}: {samples[key][-1]:.0f} env steps/s", flush=True)
    summary = {key: stats(values) for key, values in samples.items()}
    gpu = info.get("gpu")
    payload = {"machine": info, "settings": s, "samples": samples, "summary": summary, "gpu": gpu}

    rows = []
    for key, st in summary.items():
        kind, observation, scale = key.split("/")
        where = "CPU, physx_cpu" if kind == "cpu" else f"{gpu}, physx_cuda"
        rows.append([where, scale, observation, f"{st['median']:.1f} ({st['min']:.1f}-{st['max']:.1f})", st["n"]])
    if not s["gpu_envs"]:
        rows.append(["GPU, physx_cuda", "64 / 256 / 1024 envs", "state, rgb", "not measured: no GPU on this machine", 0])
    markdown = (
        f"# maniskill_env_throughput\n\n{TASK}, random actions, RGB camera {s['image_size']}x{s['image_size']}; "
        f"env steps per second, median (min-max) over repeats. Machine: {info['cpu']}, {info['cores']} cores.\n\n"
        + table(["device", "processes / envs", "observations", "env steps/s", "repeats"], rows)
    )
    figure, axis = pyplot().subplots(figsize=(6, 3.2))
    labels = list(summary)
    axis.bar(range(len(labels)), [summary[k]["median"] for k in labels], color="tab:blue")
    axis.set_xticks(range(len(labels)), labels, rotation=20, fontsize=8)
    axis.set_ylabel("env steps / s")
    axis.set_yscale("log")
    axis.set_title(f"ManiSkill3 {TASK} through the maniskill backend")
    write_outputs(out, "maniskill_env_throughput", payload, markdown, figure)
    return payload
