"""``warm_starts``: does ``pcm-run`` learn from every warm start? README command 1's config
(``configs/quickstart.yaml``, or ``--config`` / ``--set``) from a fresh warm start per seed (SFT seed
= RL seed), each trained exactly as ``pcm-run`` trains it, evaluated at the start and the end on
``eval_episodes`` fixed initial states (the same states for every seed and method).

Per seed: eval success at start and end, the gain in points, and the mean action-token entropy of
the rollouts over the first and the last :data:`WINDOW` steps (a rising entropy is a policy that
unlearns). Top level: ``seeds``, ``min_gain_points`` (the smallest end - start gain) and
``max_entropy_rise`` (the largest last-window minus first-window entropy), with the mean gain and
its standard error over seeds. Seeds run one after another; the evaluation count does not change
the training (evaluation draws from its own generator).
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import CONFIGS, QUICK_TRAINING, machine, machine_line, resolve_device, table, train_to_end, write_outputs
from pcm_core.config import load_config
from pcm_core.plots import pyplot

WINDOW = 5
"""Steps averaged for the first and last entropy and training success."""


def settings(quick: bool, args: argparse.Namespace | None = None) -> dict[str, Any]:
    """Config file, overrides, seeds and evaluation episodes (``train.steps`` stays the config's)."""
    s: dict[str, Any] = {
        "config": str((CONFIGS / "quickstart.yaml").relative_to(CONFIGS.parent)),
        "seeds": list(range(1 if quick else 5)),
        "eval_episodes": 16 if quick else 192,
        "overrides": [*(QUICK_TRAINING[1:] + ["train.steps=3"] if quick else [])],
    }
    if args is not None:
        if getattr(args, "config", None):
            s["config"] = str(args.config)
        if getattr(args, "seeds", None):
            s["seeds"] = list(range(args.seeds))
        if getattr(args, "seed_list", None):
            s["seeds"] = [int(x) for x in args.seed_list.split(",")]
        s["overrides"] += list(getattr(args, "set", None) or [])
        if getattr(args, "tiny", False):
            s["seeds"], s["eval_episodes"] = [0], 2
            s["overrides"] += ["train.steps=2", "train.tasks_per_step=1", "train.group_size=2", "train.sft.demos=4",
                               "train.sft.epochs=1", "env.options.max_steps=128", "pcm.budget=2"]
    return s


def mean_over(rows: list[dict[str, Any]], key: str) -> float:
    values = [float(row[key]) for row in rows if key in row]
    return statistics.mean(values) if values else math.nan


def one_seed(seed: int, s: dict[str, Any], workdir: Path, cache_dir: str | None) -> dict[str, Any]:
    overrides = [*s["overrides"], f"train.seed={seed}", "train.sft.seed=null", f"train.eval_episodes={s['eval_episodes']}",
                 "train.eval_every=0", "tracking.enabled=false", f"train.output_dir={workdir}"]
    if cache_dir:
        overrides.append(f"train.sft.cache_dir={cache_dir}")
    config = load_config(s["config"], overrides)
    started = time.perf_counter()
    history = train_to_end(config).history
    steps = [row for row in history if row.get("step", 0) > 0]
    evals = [row["eval_success_rate"] for row in history if "eval_success_rate" in row]
    first, last = steps[:WINDOW], steps[-WINDOW:]
    return {
        "seed": seed, "start_success": evals[0], "end_success": evals[-1], "gain_points": 100.0 * (evals[-1] - evals[0]),
        "entropy_first": mean_over(first, "entropy"), "entropy_last": mean_over(last, "entropy"),
        "entropy_rise": mean_over(last, "entropy") - mean_over(first, "entropy"),
        "train_success_first": mean_over(first, "success_rate"), "train_success_last": mean_over(last, "success_rate"),
        "kept_chunk_fraction": mean_over(steps, "kept_chunk_fraction"),
        "train_s": sum(row.get("time/step_s", 0.0) for row in steps), "wall_s": time.perf_counter() - started,
        "curves": {key: [row.get(key) for row in steps] for key in ("success_rate", "entropy", "kept_chunk_fraction")},
        "config": config.model_dump(mode="json"),
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    gains = [r["gain_points"] for r in runs]
    return {
        "seeds": len(runs),
        "min_gain_points": min(gains),
        "mean_gain_points": statistics.mean(gains),
        "gain_points_se": statistics.stdev(gains) / math.sqrt(len(gains)) if len(gains) > 1 else math.nan,
        "max_entropy_rise": max(r["entropy_rise"] for r in runs),
        "mean_start_success": statistics.mean(r["start_success"] for r in runs),
        "mean_end_success": statistics.mean(r["end_success"] for r in runs),
    }


def run(quick: bool, device: str, out: Path, args: argparse.Namespace | None = None, log=print) -> dict[str, Any]:
    s = settings(quick, args)
    if device != "auto":
        s["overrides"].append(f"train.device={device}")
    started = time.perf_counter()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = str(Path(tmp) / "cache") if quick or getattr(args, "tiny", False) else None  # never mix with real ones
        for seed in s["seeds"]:
            r = one_seed(seed, s, Path(tmp) / f"seed{seed}", cache)
            runs.append(r)
            log(f"  seed {seed}: eval {r['start_success']:.3f} -> {r['end_success']:.3f} ({r['gain_points']:+.1f} points), "
                f"entropy {r['entropy_first']:.3f} -> {r['entropy_last']:.3f}, train {r['train_s']:.0f}s")
    result = {"benchmark": "warm_starts", "machine": machine(), "device": str(resolve_device(device)), "settings": s,
              **summarize(runs), "runs": runs, "duration_s": time.perf_counter() - started}
    write_outputs(out, "warm_starts", result, markdown(result), figure(result))
    return result


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    steps = result["runs"][0]["config"]["train"]["steps"]
    rows = [[r["seed"], f"{r['start_success']:.3f}", f"{r['end_success']:.3f}", f"{r['gain_points']:+.1f}",
             f"{r['entropy_first']:.3f}", f"{r['entropy_last']:.3f}", f"{r['train_success_first']:.2f}",
             f"{r['train_success_last']:.2f}", f"{r['kept_chunk_fraction']:.3f}", f"{r['train_s']:.0f}"] for r in result["runs"]]
    return "\n".join([
        "# warm_starts: does pcm-run learn from every warm start?",
        "",
        f"{machine_line(result['machine'], result['device'])} Config `{s['config']}` with overrides {s['overrides']}; "
        f"{steps} RL steps from a fresh warm start per seed (SFT seed = RL seed); eval on {s['eval_episodes']} fixed "
        f"initial states at the start and the end; entropy and training success over the first and last {WINDOW} steps.",
        "",
        table(["seed", "eval start", "eval end", "gain (points)", "entropy first", "entropy last", "train success first",
               "train success last", "kept chunk fraction", "train s"], rows),
        "",
        f"**seeds** {result['seeds']}; **min_gain_points** {result['min_gain_points']:.1f}; mean gain "
        f"{result['mean_gain_points']:.1f} +- {result['gain_points_se']:.1f} (standard error over seeds); "
        f"**max_entropy_rise** {result['max_entropy_rise']:+.3f}; mean eval {result['mean_start_success']:.3f} -> "
        f"{result['mean_end_success']:.3f}.",
    ])


def figure(result: dict[str, Any]):
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for r in result["runs"]:
        left.plot(range(1, len(r["curves"]["success_rate"]) + 1), r["curves"]["success_rate"], label=f"seed {r['seed']}", alpha=0.8)
        right.plot(range(1, len(r["curves"]["entropy"]) + 1), r["curves"]["entropy"], label=f"seed {r['seed']}", alpha=0.8)
    left.set_xlabel("RL step")
    left.set_ylabel("training success rate")
    right.set_xlabel("RL step")
    right.set_ylabel("rollout action-token entropy")
    left.legend(fontsize=7)
    return fig
