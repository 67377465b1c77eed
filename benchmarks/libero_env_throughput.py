"""``libero_env_throughput``: LIBERO environment steps per second with 1 and 2 worker processes.

Two simulators (libero_spatial task 0, published render settings: reflections on, agentview only)
run under :class:`pcm_core.vector_env.SubprocessEnv`, the vector env ``pcm-run`` uses with
``env.workers``: with 1 worker both are stepped one after the other in one process, with 2 each
has its own process. Building and the first reset are not timed; the row's throughput is
``2 * steps`` env steps over the wall time of ``steps`` batched steps with random actions.
Repeats are interleaved over the configurations. Needs the [libero] extra.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from benchmarks.common import fmt_range, machine, stats, table, write_outputs
from pcm_core.plots import pyplot


def settings(quick: bool, args: argparse.Namespace | None = None) -> dict[str, Any]:
    s: dict[str, Any] = {
        "suite": "libero_spatial",
        "envs": 2,
        "processes": [1, 2],
        "image_sizes": [128, 224],
        "steps": 20 if quick else 100,
        "repeats": 1 if quick else 3,
        "seed": 0,
    }
    if args is not None and getattr(args, "repeats", None):
        s["repeats"] = args.repeats
    if args is not None and getattr(args, "tiny", False):
        s.update(steps=3, repeats=1, image_sizes=[64])
    return s


def measure(workers: int, image_size: int, s: dict[str, Any]) -> float:
    """Env steps per second of ``s["envs"]`` simulators split across ``workers`` processes."""
    import numpy as np

    from pcm_core.config import load_config, resolve_components
    from pcm_core.vector_env import SubprocessEnv

    config = load_config(None, [f"env.options.suite={s['suite']}", "env.options.tasks=[0]",
                                f"env.options.image_size={image_size}", "tracking.enabled=false"], env="libero")
    env = SubprocessEnv(resolve_components(config)["env"], s["envs"], seed=s["seed"], workers=workers)
    try:
        env.reset([0] * s["envs"], [s["seed"]] * s["envs"])
        rng = np.random.default_rng(s["seed"])
        start = time.perf_counter()
        for _ in range(s["steps"]):
            env.step(rng.uniform(-1.0, 1.0, (s["envs"], 7)))
        return s["envs"] * s["steps"] / (time.perf_counter() - start)
    finally:
        env.close()


def run(quick: bool, device: str, out: Path, args: argparse.Namespace | None = None, log=print) -> dict[str, Any]:
    s = settings(quick, args)
    started = time.perf_counter()
    configs = [(p, size) for size in s["image_sizes"] for p in s["processes"]]
    samples: dict[tuple[int, int], list[float]] = {c: [] for c in configs}
    for repeat in range(s["repeats"]):
        for processes, size in configs:
            rate = measure(processes, size, s)
            samples[(processes, size)].append(rate)
            log(f"repeat {repeat}: {processes} worker process(es), {size}x{size}: {rate:.2f} env steps/s")
    rows = [{"processes": p, "image_size": size, "steps_per_s": stats(samples[(p, size)])} for p, size in configs]
    result = {"benchmark": "libero_env_throughput", "machine": machine(), "settings": s, "rows": rows,
              "duration_s": time.perf_counter() - started}
    write_outputs(out, "libero_env_throughput", result, markdown(result), figure(result))
    return result


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    rows = [[r["processes"], f"{r['image_size']}x{r['image_size']}", fmt_range(r["steps_per_s"])] for r in result["rows"]]
    return "\n".join([
        "# LIBERO environment throughput",
        "",
        f"{s['envs']} simulators of {s['suite']} task 0 (one agentview camera, published render settings) in "
        f"`SubprocessEnv` with 1 or 2 worker processes; {s['steps']} batched random steps after build and reset; "
        f"median (min-max) of {s['repeats']} repeat(s). "
        f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores "
        f"(load average at start {result['machine']['load_average_at_start']}).",
        "",
        table(["worker processes", "image", "env steps/s (both envs)"], rows),
        "",
        "Reproduce: `python -m benchmarks libero_env_throughput` (`--quick` for a short run).",
    ])


def figure(result: dict[str, Any]):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    sizes = sorted({r["image_size"] for r in result["rows"]})
    width = 0.35
    for i, processes in enumerate(sorted({r["processes"] for r in result["rows"]})):
        values = [next(r["steps_per_s"]["median"] for r in result["rows"] if r["image_size"] == size and r["processes"] == processes)
                  for size in sizes]
        ax.bar([j + i * width for j in range(len(sizes))], values, width, label=f"{processes} worker process(es)")
    ax.set_xticks([j + width / 2 for j in range(len(sizes))], [f"{size}x{size}" for size in sizes])
    ax.set_ylabel("env steps / s")
    ax.set_title("LIBERO throughput (CPU rendering)")
    ax.legend()
    fig.tight_layout()
    return fig
