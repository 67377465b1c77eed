"""``grad_update``: one full update (select + forward/backward + optimizer step) on one collected
batch, the ``all`` sampler (GRPO) against ``pcm`` at budgets B, per model size, interleaved.

Every configuration is a :class:`~pcm_core.learner.Learner` around the *same* policy module and the
*same* AdamW instance (so optimizer state and work are identical), fed the *same* rollout batch;
only the sampler (and so the kept-chunk count) differs. Each configuration runs one untimed update
first; the order of configurations is shuffled in every repeat. Speedup at B = median(all) /
median(pcm at B); its min, max and ``paired_median`` are over the per-repeat ratios of the same
repeat (paired, interleaved measurements).
"""

from __future__ import annotations

import argparse
import gc
import random
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import (
    EXACT_BUDGET, apply_batch_args, build_policy, collect_batch, config_for, fmt_range, machine, machine_line, make_learner,
    start_on_batch, stats, table, write_outputs,
)
from pcm_core.plots import pyplot
from pcm_core.profiling import StepTimer

SECTIONS = ("select", "forward_backward", "optimizer")


def settings(quick: bool, args: argparse.Namespace | None = None) -> dict[str, Any]:
    s = {
        "sizes": ["1m"] if quick else ["1m", "25m", "100m"],
        "budgets": [4, 8, 12, 16, 32],
        "repeats": {"1m": 3 if quick else 5, "25m": 3, "100m": 3, "1b": 3},
        # the 100m model costs ~4 min per GRPO update on a shared 2-core machine: fewer budgets
        "budgets_by_size": {"100m": [4, 12, 32]},
        "groups": 2,
        "group_size": 2,
        "max_steps": 256,
        "micro_batch_size": 64,
        "dtype": "float32",
        "seed": 0,
    }
    if args is not None:
        apply_batch_args(s, args)
        if getattr(args, "micro_batch_size", None):
            s["micro_batch_size"] = args.micro_batch_size
        if getattr(args, "sizes", None):
            s["sizes"] = args.sizes.split(",")
        if getattr(args, "repeats", None):
            s["repeats"] = {size: args.repeats for size in s["sizes"]}
        if getattr(args, "max_steps", None):
            s["max_steps"] = args.max_steps
        if getattr(args, "budgets", None):
            s["budgets"] = [int(b) for b in args.budgets.split(",")]
            s["budgets_by_size"] = {}
        if getattr(args, "tiny", False):
            s.update(sizes=["1m"], repeats={"1m": 1}, max_steps=64)
    return s


def _update(learner, batch) -> dict[str, float]:
    timer = StepTimer()
    metrics = learner.update(batch, timer)
    sample = {name: timer.seconds.get(name, 0.0) for name in SECTIONS}
    sample["total"] = sum(sample.values())
    sample["kept_chunks"] = metrics["kept_chunks"]
    sample["saved_activation_bytes"] = metrics["saved_activation_bytes"]
    return sample


def measure_size(size: str, batch, s: dict[str, Any], device: torch.device, log) -> dict[str, Any]:
    """All configurations of one model size, ``repeats`` interleaved rounds."""
    overrides = [f"train.micro_batch_size={s['micro_batch_size']}", f"env.options.max_steps={s['max_steps']}",
                 f"train.dtype={s['dtype']}"]
    policy = build_policy(config_for("all", 12, size, overrides=overrides), device)
    params = sum(p.numel() for p in policy.module.parameters())
    budgets = s.get("budgets_by_size", {}).get(size, s["budgets"])
    names = ["all"] + [f"pcm@{b}" for b in budgets]
    learners = {"all": make_learner(policy, config_for("all", max(budgets), size, overrides=overrides))}
    for b in budgets:
        learners[f"pcm@{b}"] = make_learner(policy, config_for("pcm", b, size, overrides=[*overrides, *EXACT_BUDGET]))
    optimizer = learners["all"].optimizer  # one AdamW for every configuration: identical optimizer work
    for learner in learners.values():
        learner.optimizer = optimizer
    for name in names:  # untimed: AdamW state, the allocator and each batch shape's kernels warm up
        _update(learners[name], batch)
    rng = random.Random(s["seed"])
    samples: list[dict[str, Any]] = []
    for repeat in range(s["repeats"][size]):
        order = names[:]
        rng.shuffle(order)
        for name in order:
            gc.collect()
            sample = _update(learners[name], batch)
            sample.update(repeat=repeat, config=name)
            samples.append(sample)
            log(f"  {size} r{repeat} {name:7s} {sample['total']:.3f}s (fb {sample['forward_backward']:.3f}s, "
                f"opt {sample['optimizer']:.3f}s, kept {sample['kept_chunks']:.0f})")
    return {"parameters": params, "budgets": budgets, "samples": samples, "summary": summarise(samples, names, budgets)}


def summarise(samples: list[dict[str, Any]], names: list[str], budgets: list[int]) -> dict[str, Any]:
    by = {n: [x for x in samples if x["config"] == n] for n in names}
    summary: dict[str, Any] = {}
    all_total = stats([x["total"] for x in by["all"]])
    for name in names:
        rows = by[name]
        entry: dict[str, Any] = {
            "kept_chunks": rows[0]["kept_chunks"],
            "total_s": stats([x["total"] for x in rows]),
            **{f"{sec}_s": stats([x[sec] for x in rows]) for sec in SECTIONS},
        }
        if name != "all":
            paired = stats([a["total"] / p["total"] for a in by["all"] for p in rows if a["repeat"] == p["repeat"]])
            fb_all = stats([x["forward_backward"] for x in by["all"]])["median"]
            entry.update(
                # median: the ratio of the medians; min, max and paired_median: the per-repeat ratios
                speedup={**paired, "paired_median": paired["median"],
                         "median": all_total["median"] / entry["total_s"]["median"]},
                limit=by["all"][0]["kept_chunks"] / max(rows[0]["kept_chunks"], 1),
                forward_backward_speedup=fb_all / entry["forward_backward_s"]["median"],
            )
        summary[name] = entry
    return summary


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    lines = [
        "# grad_update: GRPO (`all`) vs PCM, one full update on one batch",
        "",
        f"{machine_line(result['machine'], result['device'])} Batch: {s['groups']}x{s['group_size']} trajectories of "
        f"{result['batch']['chunks_per_trajectory'][0]} chunks; micro-batch {s['micro_batch_size']}; "
        f"{s.get('dtype', 'float32')} autocast on CUDA."
        f" Times in seconds, median (min-max) over interleaved repeats.",
        "",
    ]
    for size, r in result["sizes"].items():
        lines += [f"## {size} ({r['parameters'] / 1e6:.1f}M parameters, {s['repeats'][size]} repeats)", ""]
        rows = []
        for name, e in r["summary"].items():
            rows.append([
                name, int(e["kept_chunks"]), fmt_range(e["total_s"], 3), f"{e['select_s']['median']:.3f}",
                f"{e['forward_backward_s']['median']:.3f}", f"{e['optimizer_s']['median']:.3f}",
                fmt_range(e["speedup"]) if "speedup" in e else "1", f"{e['limit']:.2f}" if "limit" in e else "1",
                f"{e['forward_backward_speedup']:.2f}" if "forward_backward_speedup" in e else "1",
            ])
        lines += [table(["config", "kept chunks", "update s", "select s", "fwd+bwd s", "optimizer s",
                         "speedup", "limit T/B", "fwd+bwd speedup"], rows), ""]
    b12 = result.get("speedup_at_b12")
    if b12:
        lines += [f"**speedup_at_b12** ({b12['size']}): {b12['median']:.2f} (paired min {b12['min']:.2f}, "
                  f"max {b12['max']:.2f}); limit {b12['limit']:.2f}.", ""]
    return "\n".join(lines)


def figure(result: dict[str, Any]):
    plt = pyplot()

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    for size, r in result["sizes"].items():
        budgets = r["budgets"]
        e = [r["summary"][f"pcm@{b}"] for b in budgets]
        med = [x["speedup"]["median"] for x in e]
        err = [[m - x["speedup"]["min"] for m, x in zip(med, e)], [x["speedup"]["max"] - m for m, x in zip(med, e)]]
        ax.errorbar(budgets, med, yerr=[[max(v, 0) for v in err[0]], [max(v, 0) for v in err[1]]], marker="o",
                    capsize=3, label=f"{size} ({r['parameters'] / 1e6:.0f}M)")
    first = next(iter(result["sizes"].values()))
    ax.plot(first["budgets"], [first["summary"][f"pcm@{b}"]["limit"] for b in first["budgets"]], "k--", label="limit T/B")
    ax.set_xlabel("budget B (chunks kept per trajectory)")
    ax.set_ylabel("update speedup vs GRPO (x)")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("full update: median, min-max over repeats")
    size, r = list(result["sizes"].items())[-1]
    names = list(r["summary"])
    bottom = [0.0] * len(names)
    for sec in SECTIONS:
        vals = [r["summary"][n][f"{sec}_s"]["median"] for n in names]
        bx.bar(names, vals, bottom=bottom, label=sec)
        bottom = [b + v for b, v in zip(bottom, vals)]
    bx.set_ylabel("seconds per update (median)")
    bx.set_title(f"time split, {size}")
    bx.legend()
    return fig


def run(quick: bool, device: str, out: Path, args: argparse.Namespace | None = None, log=print) -> dict[str, Any]:
    s = settings(quick, args)
    started = time.perf_counter()
    dev, env, policy = start_on_batch(s, device, config_for("all", 12, "1m", overrides=[f"env.options.max_steps={s['max_steps']}"]))
    batch, notes = collect_batch(policy, env, s["groups"], s["group_size"], s["seed"])
    env.close()
    log(f"batch: {notes['trajectories']} trajectories x {notes['chunks_per_trajectory'][0]} chunks "
        f"(rollout {notes['rollout_s']:.1f}s, relabelled={notes['relabelled']})")
    result: dict[str, Any] = {"benchmark": "grad_update", "machine": machine(), "device": str(dev), "settings": s,
                              "batch": notes, "sizes": {}}
    for size in s["sizes"]:
        log(f"size {size}")
        result["sizes"][size] = measure_size(size, batch, s, dev, log)
        largest = size  # results are written after every size, so a cut-short run leaves what it measured
        if "pcm@12" in result["sizes"][largest]["summary"]:
            e = result["sizes"][largest]["summary"]["pcm@12"]
            result["speedup_at_b12"] = {**e["speedup"], "limit": e["limit"], "size": largest}
        result["duration_s"] = time.perf_counter() - started
        result["complete"] = size == s["sizes"][-1]
        write_outputs(out, "grad_update", result, markdown(result), figure(result))
    return result
