"""``activation_memory``: bytes autograd saves for backward in one update, GRPO (``all``) vs PCM.

Measured with :class:`pcm_core.profiling.SavedActivationMeter` inside ``Learner.backward`` (the
training code path): ``total`` sums every micro-batch's saved tensors, i.e. what one pass over
the whole kept batch would hold; ``peak`` is the largest single micro-batch, what is alive at
once with micro-batching. On CUDA, ``torch.cuda.max_memory_allocated`` of the update is recorded
too (it includes weights, gradients and optimizer state). Saved bytes are deterministic, so one
update per configuration suffices; the same batch feeds every configuration.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    EXACT_BUDGET, apply_batch_args, build_policy, collect_batch, config_for, machine, machine_line, make_learner, start_on_batch,
    table, write_outputs,
)
from pcm_core.plots import pyplot
from pcm_core.profiling import StepTimer


def settings(quick: bool, args: argparse.Namespace | None = None) -> dict[str, Any]:
    s: dict[str, Any] = {
        "sizes": ["1m"] if quick else ["1m", "25m", "100m"],
        "budgets": [4, 8, 12, 16, 32],
        "budgets_largest": [12] if not quick else [4, 8, 12, 16, 32],
        "micro_batch_sizes": {"1m": [64, 256], "25m": [64], "100m": [64]},
        "groups": 2,
        "group_size": 2,
        "max_steps": 256,
        "dtype": "float32",
        "seed": 0,
    }
    if args is not None:
        apply_batch_args(s, args)
        if getattr(args, "sizes", None):
            s["sizes"] = args.sizes.split(",")
        if getattr(args, "max_steps", None):
            s["max_steps"] = args.max_steps
        if getattr(args, "micro_batch_size", None):
            s["micro_batch_sizes"] = {size: [args.micro_batch_size] for size in s["sizes"]}
        if getattr(args, "tiny", False):
            s.update(sizes=["1m"], micro_batch_sizes={"1m": [64]}, max_steps=64)
    return s


def measure(size: str, micro: int, budgets: list[int], batch, s: dict[str, Any], device, log) -> dict[str, Any]:
    overrides = [f"train.micro_batch_size={micro}", f"env.options.max_steps={s['max_steps']}", f"train.dtype={s['dtype']}"]
    policy = build_policy(config_for("all", 12, size, overrides=overrides), device)
    rows: dict[str, Any] = {}
    for name, sampler, budget in [("all", "all", max(budgets))] + [(f"pcm@{b}", "pcm", b) for b in budgets]:
        learner = make_learner(policy, config_for(sampler, budget, size, overrides=[*overrides, *(EXACT_BUDGET if sampler == "pcm" else [])]))
        metrics = learner.update(batch, StepTimer())
        rows[name] = {
            "kept_chunks": metrics["kept_chunks"],
            "total_bytes": metrics["saved_activation_bytes"],
            "peak_bytes": metrics["peak_saved_activation_bytes"],
            "cuda_peak_memory_bytes": metrics.get("cuda_peak_memory_bytes"),
        }
        log(f"  {size} micro {micro} {name:7s} kept {metrics['kept_chunks']:.0f} total "
            f"{metrics['saved_activation_bytes'] / 2**20:.1f} MiB peak {metrics['peak_saved_activation_bytes'] / 2**20:.1f} MiB")
    base = rows["all"]
    for name, r in rows.items():
        r["total_reduction"] = 1.0 - r["total_bytes"] / base["total_bytes"]
        r["peak_reduction"] = 1.0 - r["peak_bytes"] / base["peak_bytes"]
        r["limit"] = 1.0 - r["kept_chunks"] / base["kept_chunks"]
        if r["cuda_peak_memory_bytes"] and base["cuda_peak_memory_bytes"]:
            r["cuda_peak_reduction"] = 1.0 - r["cuda_peak_memory_bytes"] / base["cuda_peak_memory_bytes"]
    return {"parameters": sum(p.numel() for p in policy.module.parameters()), "micro_batch_size": micro, "configs": rows}


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        "# activation_memory: saved-for-backward bytes per update, GRPO (`all`) vs PCM",
        "",
        f"{machine_line(m, result['device'])} One batch of "
        f"{len(result['batch']['chunks_per_trajectory'])} trajectories x {result['batch']['chunks_per_trajectory'][0]} chunks; "
        f"{result['settings'].get('dtype', 'float32')} autocast on CUDA. "
        "`total`: sum over micro-batches (= one pass over the kept batch); `peak`: largest micro-batch.",
        "",
    ]
    rows = []
    for run in result["runs"]:
        for name, r in run["configs"].items():
            cuda = f"{r['cuda_peak_memory_bytes'] / 2**20:.0f}" if r.get("cuda_peak_memory_bytes") else "-"
            rows.append([run["size"], run["micro_batch_size"], name, int(r["kept_chunks"]), f"{r['total_bytes'] / 2**20:.1f}",
                         f"{r['total_reduction']:.3f}", f"{r['peak_bytes'] / 2**20:.1f}", f"{r['peak_reduction']:.3f}",
                         f"{r['limit']:.3f}", cuda])
    lines += [table(["size", "micro-batch", "config", "kept chunks", "total MiB", "total reduction", "peak MiB",
                     "peak reduction", "limit 1-B/T", "CUDA peak MiB"], rows), ""]
    r = result.get("reduction_at_b12")
    if r:
        lines += [f"**reduction_at_b12** ({r['size']}, total saved bytes): {r['value']:.3f}; limit {r['limit']:.3f}; "
                  f"peak micro-batch reduction at micro-batch {r['micro_batch_size']}: {r['peak_reduction']:.3f}.", ""]
    return "\n".join(lines)


def figure(result: dict[str, Any]):
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for run in result["runs"]:
        items = [(r["kept_chunks"], r["total_bytes"] / 2**20) for r in run["configs"].values()]
        items.sort()
        ax.plot([k for k, _ in items], [v for _, v in items], marker="o", label=f"{run['size']} (micro {run['micro_batch_size']})")
    ax.set_xlabel("kept chunks in the update (256 = GRPO)")
    ax.set_ylabel("saved activations per update (MiB)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("saved-for-backward bytes scale with kept chunks")
    return fig


def run(quick: bool, device: str, out: Path, args: argparse.Namespace | None = None, log=print) -> dict[str, Any]:
    s = settings(quick, args)
    started = time.perf_counter()
    dev, env, policy = start_on_batch(s, device, config_for("all", 12, "1m", overrides=[f"env.options.max_steps={s['max_steps']}"]))
    batch, notes = collect_batch(policy, env, s["groups"], s["group_size"], s["seed"])
    env.close()
    result: dict[str, Any] = {"benchmark": "activation_memory", "machine": machine(), "device": str(dev),
                              "settings": s, "batch": notes, "runs": []}
    for size in s["sizes"]:
        budgets = s["budgets_largest"] if size == s["sizes"][-1] and len(s["sizes"]) > 1 else s["budgets"]
        for micro in s["micro_batch_sizes"].get(size, [64]):
            result["runs"].append({"size": size, **measure(size, micro, budgets, batch, s, dev, log)})
    largest = [r for r in result["runs"] if r["size"] == s["sizes"][-1] and "pcm@12" in r["configs"]]
    if largest:
        r = max(largest, key=lambda run: run["micro_batch_size"])  # prefer one pass over the whole batch
        c = r["configs"]["pcm@12"]
        result["reduction_at_b12"] = {
            "value": c["total_reduction"], "limit": c["limit"], "peak_reduction": c["peak_reduction"],
            "micro_batch_size": r["micro_batch_size"], "size": r["size"], "cuda_peak_reduction": c.get("cuda_peak_reduction"),
        }
    result["duration_s"] = time.perf_counter() - started
    write_outputs(out, "activation_memory", result, markdown(result), figure(result))
    return result
