"""``maniskill_env_throughput``: ManiSkill3 env steps per second through the ``maniskill`` backend.

CPU (``physx_cpu``, PickCube-v1, seeded random actions), with state observations (``image: false``)
and with a 128x128 RGB camera: 1 process (the env in the benchmark's own process, as with
``env.workers: 0``) and 2 processes (``env.workers: 2``, :class:`pcm_core.vector_env.SubprocessEnv`,
one env per worker; observations cross pipes, as in training). ``env.workers: 1`` is measured too,
to show what the pipe costs. The env is built, reset and warmed up before timing; a finished batch
is reset inside the timed loop. GPU (``physx_cuda``, when torch sees one): one GPU-parallel batch of
64, 256 and 1024 envs. Needs the [maniskill] extra and a Vulkan driver (docs/maniskill.md).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import machine, stats, table, write_outputs
from pcm_core.config import ResolvedComponent
from pcm_core.plots import pyplot

TASK = "PickCube-v1"


def settings(quick: bool, device: str, args: argparse.Namespace | None = None) -> dict[str, Any]:
    import torch

    s: dict[str, Any] = {
        "task": TASK,
        "image_size": 128,
        "cpu_layouts": [[0, 1], [1, 1], [2, 2]],
        "observations": ["state", "rgb"],
        "steps": {"state": 100 if quick else 400, "rgb": 20 if quick else 80},
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
            s.update(cpu_layouts=[[0, 1]], observations=["state"], steps={"state": 3, "rgb": 3}, warmup_steps=1, gpu_envs=[])
    return s


def build(observation: str, backend: str, workers: int, num_envs: int, s: dict[str, Any]):
    """A ``maniskill`` env of ``num_envs`` PickCube envs, in this process (``workers == 0``) or
    split over ``workers`` processes."""
    from pcm_core.vector_env import SubprocessEnv
    from pcm_maniskill.env import ManiSkillEnv, ManiSkillOptions

    options = ManiSkillOptions(
        tasks=[TASK], sim_backend=backend, image=observation == "rgb", image_size=s["image_size"]
    )
    if workers == 0:
        return ManiSkillEnv(options, num_envs=num_envs, seed=s["seed"])
    return SubprocessEnv(ResolvedComponent("env", "maniskill", ManiSkillEnv, options), num_envs, s["seed"], workers)


def steps_per_second(env, steps: int, warmup: int, seed: int) -> float:
    """Env steps per second of ``steps`` batched steps with random actions, after ``warmup`` steps."""
    rng = np.random.default_rng(seed)
    n = env.num_envs
    episode = 0

    def reset() -> None:
        nonlocal episode
        env.reset([0] * n, [seed * 1000 + episode * n + i for i in range(n)])
        episode += 1

    reset()
    for _ in range(warmup):
        env.step(rng.uniform(-1, 1, (n, 7)).astype(np.float32))
    reset()
    start = time.perf_counter()
    for _ in range(steps):
        if env.step(rng.uniform(-1, 1, (n, 7)).astype(np.float32)).done.all():
            reset()
    return steps * n / (time.perf_counter() - start)


def measure(observation: str, backend: str, workers: int, num_envs: int, steps: int, s: dict[str, Any], repeat: int) -> float:
    env = build(observation, backend, workers, num_envs, s)
    try:
        return steps_per_second(env, steps, s["warmup_steps"], s["seed"] + repeat)
    finally:
        env.close()


def run(quick: bool, device: str, out: Path, args: argparse.Namespace | None = None) -> dict[str, Any]:
    s = settings(quick, device, args)
    info = machine()
    samples: dict[str, list[float]] = {}
    for repeat in range(s["repeats"]):
        for observation in s["observations"]:
            for workers, num_envs in s["cpu_layouts"]:
                key = f"cpu/{observation}/workers={workers}"
                steps = s["steps"][observation]
                samples.setdefault(key, []).append(measure(observation, "physx_cpu", workers, num_envs, steps, s, repeat))
                print(f"  {key}: {samples[key][-1]:.1f} env steps/s", flush=True)
            for num_envs in s["gpu_envs"]:
                key = f"gpu/{observation}/{num_envs}envs"
                samples.setdefault(key, []).append(measure(observation, "physx_cuda", 0, num_envs, s["gpu_steps"], s, repeat))
                print(f"  {key}: {samples[key][-1]:.0f} env steps/s", flush=True)
    summary = {key: stats(values) for key, values in samples.items()}
    gpu = info.get("gpu")
    payload = {"machine": info, "settings": s, "samples": samples, "summary": summary, "gpu": gpu}

    processes = {"workers=0": "1 (in process)", "workers=1": "1 worker (+ pipe)", "workers=2": "2 workers"}
    rows = []
    for key, st in summary.items():
        kind, observation, scale = key.split("/")
        where = "CPU, physx_cpu" if kind == "cpu" else f"{gpu}, physx_cuda"
        scale = processes.get(scale, scale)
        rows.append([where, scale, observation, f"{st['median']:.1f} ({st['min']:.1f}-{st['max']:.1f})", st["n"]])
    if not s["gpu_envs"]:
        reason = "not run (--device cpu or --tiny)" if gpu else "not measured: no GPU on this machine"
        rows.append(["GPU, physx_cuda", "64 / 256 / 1024 envs", "state, rgb", reason, 0])
    markdown = (
        f"# maniskill_env_throughput\n\n{TASK}, random actions, RGB camera {s['image_size']}x{s['image_size']}; "
        f"env steps per second, median (min-max) over repeats. Machine: {info['cpu']}, {info['cores']} cores, "
        f"load average at start {info['load_average_at_start']}.\n\n"
        + table(["device", "processes (1 env each) / GPU envs", "observations", "env steps/s", "repeats"], rows)
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
