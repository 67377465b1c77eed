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
from benchmarks.time_to_success import METHODS as TIME_TO_SUCCESS_METHODS
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


def from_time_to_success(result: dict[str, Any], method: str, steps: int) -> dict[str, Any]:
    """The ``warm_starts`` result of ``method``'s runs in a ``time_to_success`` result, read off
    their first ``steps`` steps: the first ``steps`` steps of a longer run are exactly a
    ``steps``-step run (nothing in training depends on ``train.steps``; evaluations draw from their
    own generator), so the end success is the evaluation at step ``steps``."""
    runs = []
    for r in (r for r in result["runs"] if r["method"] == method):
        evals = {step: success for step, _, success in r["curve"]}
        if steps not in evals:
            raise SystemExit(f"{method} seed {r['seed']} has no evaluation at step {steps} (evaluated at {sorted(evals)}).\n"
                             "Fix: pass --steps at a multiple of the run's train.eval_every")
        rows = [row for row in r["history"] if row["step"] <= steps]
        first, last = rows[:WINDOW], rows[-WINDOW:]
        runs.append({
            "seed": r["seed"], "start_success": evals[0], "end_success": evals[steps],
            "gain_points": 100.0 * (evals[steps] - evals[0]),
            "entropy_first": mean_over(first, "entropy"), "entropy_last": mean_over(last, "entropy"),
            "entropy_rise": mean_over(last, "entropy") - mean_over(first, "entropy"),
            "train_success_first": mean_over(first, "success_rate"), "train_success_last": mean_over(last, "success_rate"),
            "kept_chunk_fraction": mean_over(rows, "kept_chunk_fraction"),
            "train_s": next(clock for step, clock, _ in r["curve"] if step == steps),
            "curves": {key: [row[key] for row in rows] for key in ("success_rate", "entropy", "kept_chunk_fraction")},
            "config": {**r["config"], "train": {**r["config"]["train"], "steps": steps}},
        })
    config = str(TIME_TO_SUCCESS_METHODS[method].relative_to(CONFIGS.parent))
    overrides = [o for o in result["settings"]["overrides"] if not o.startswith(("train.eval_every", "train.sft.seed"))]
    if method == "pcm":  # a lever measured against plain GRPO (time_to_success --pcm-set)
        overrides += result["settings"].get("pcm_overrides", [])
    s = {"config": config, "seeds": [r["seed"] for r in runs], "eval_episodes": runs[0]["config"]["train"]["eval_episodes"],
         "overrides": overrides, "read_off": f"time_to_success, {method}'s runs, steps 0-{steps}"}
    return {"benchmark": "warm_starts", "machine": result["machine"], "device": result["device"], "settings": s,
            **summarize(runs), "runs": runs, "duration_s": result["duration_s"]}


def merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from ``warm_starts`` runs on disjoint seed lists (the same settings otherwise),
    e.g. processes sharing a 2-core machine: their runs summarised together, in seed order."""
    seeds = [r["seed"] for result in results for r in result["runs"]]
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"warm_starts results to merge share seeds: {sorted(seeds)}.\nFix: merge runs of disjoint --seed-list")
    runs = sorted((r for result in results for r in result["runs"]), key=lambda r: r["seed"])
    return {**results[0], "settings": {**results[0]["settings"], "seeds": sorted(seeds)}, **summarize(runs), "runs": runs,
            "duration_s": max(result["duration_s"] for result in results), "merged_from": len(results)}


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
        f"initial states at the start and the end; entropy and training success over the first and last {WINDOW} steps."
        + (f" Read off {s['read_off']}." if "read_off" in s else ""),
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


def paired(named: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Several ``warm_starts`` results on the same seeds (the same warm starts), compared seed by
    seed: per method the mean gain and its standard error, and against the first method the mean
    of the per-seed differences of the end success, with its standard error (the paired test)."""
    seeds = sorted(set.intersection(*({r["seed"] for r in result["runs"]} for result in named.values())))
    by = {name: {r["seed"]: r for r in result["runs"]} for name, result in named.items()}
    reference = next(iter(named))

    def mean_se(values: list[float]) -> tuple[float, float]:
        se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan
        return statistics.mean(values), se

    methods = {}
    for name in named:
        gains = [by[name][seed]["gain_points"] for seed in seeds]
        diffs = [100.0 * (by[name][seed]["end_success"] - by[reference][seed]["end_success"]) for seed in seeds]
        methods[name] = {
            "gain_points": mean_se(gains), "end_minus_reference_points": mean_se(diffs),
            "entropy_rise_max": max(by[name][seed]["entropy_rise"] for seed in seeds),
            "per_seed_end": [by[name][seed]["end_success"] for seed in seeds],
            "config": named[name]["settings"]["config"], "overrides": named[name]["settings"]["overrides"],
        }
    return {"benchmark": "warm_starts_paired", "reference": reference, "seeds": seeds,
            "start_success": [by[reference][seed]["start_success"] for seed in seeds], "methods": methods,
            "machine": next(iter(named.values()))["machine"], "device": next(iter(named.values()))["device"]}


def paired_markdown(result: dict[str, Any]) -> str:
    seeds, ref = result["seeds"], result["reference"]
    rows = []
    for name, m in result["methods"].items():
        gain, gain_se = m["gain_points"]
        diff, diff_se = m["end_minus_reference_points"]
        rows.append([name, f"`{m['config']}` {' '.join(o for o in m['overrides'] if not o.startswith('train.device'))}",
                     *(f"{x:.3f}" for x in m["per_seed_end"]), f"{gain:+.1f} +- {gain_se:.1f}",
                     "-" if name == ref else f"{diff:+.1f} +- {diff_se:.1f}", f"{m['entropy_rise_max']:+.3f}"])
    return "\n".join([
        "# warm_starts, paired: the same warm starts (SFT seed = RL seed) under each method",
        "",
        f"{machine_line(result['machine'], result['device'])} Seeds {seeds}; eval success at the start "
        f"{' / '.join(f'{x:.3f}' for x in result['start_success'])} (the same for every method); end success per seed; "
        "gain = end - start in points, mean +- standard error over seeds; the paired difference is each seed's end "
        f"success minus {ref}'s, mean +- standard error.",
        "",
        table(["method", "config", *(f"end, seed {s}" for s in seeds), "gain (points)", f"end - {ref} (points)",
               "largest entropy rise"], rows),
    ])


def paired_figure(result: dict[str, Any]):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, m in result["methods"].items():
        ax.plot(result["seeds"], m["per_seed_end"], marker="o", label=name)
    ax.plot(result["seeds"], result["start_success"], "k--", marker="x", label="warm start")
    ax.set_xlabel("seed (its own warm start)")
    ax.set_ylabel("eval success after training")
    ax.legend()
    return fig


def merge_main(argv: list[str] | None = None) -> None:
    """``python -m benchmarks.warm_starts NAME=RESULT.json[,MORE.json] ... [--steps N] [--out DIR]``."""
    import json

    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.warm_starts",
        description="Pair warm_starts results by seed (warm_starts_paired.*). A RESULT may be a time_to_success "
        "result, whose method NAME is read off its first --steps steps (warm_starts_NAME.* too); comma-separated "
        "warm_starts results of disjoint seed lists are merged first.",
    )
    parser.add_argument("named", nargs="+", metavar="NAME=RESULT.json[,MORE.json]")
    parser.add_argument("--steps", type=int, default=50, help="steps read off a time_to_success result (default 50)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    named = {}
    for arg in args.named:
        if "=" not in arg:
            parser.error(f"'{arg}' has no NAME=: write e.g. pcm={arg}")
        name, paths = arg.split("=", 1)
        for path in paths.split(","):
            if not Path(path).is_file():
                parser.error(f"no result file '{path}' (in '{arg}')")
        if "," in paths:
            loaded = merge([json.loads(Path(path).read_text()) for path in paths.split(",")])
            write_outputs(args.out, f"warm_starts_{name}", loaded, markdown(loaded), figure(loaded))
        else:
            loaded = json.loads(Path(paths).read_text())
        if loaded["benchmark"] == "time_to_success":
            loaded = from_time_to_success(loaded, name, args.steps)
            write_outputs(args.out, f"warm_starts_{name}", loaded, markdown(loaded), figure(loaded))
        named[name] = loaded
    result = paired(named)
    write_outputs(args.out, "warm_starts_paired", result, paired_markdown(result), paired_figure(result))
    print(paired_markdown(result))


if __name__ == "__main__":
    merge_main()
