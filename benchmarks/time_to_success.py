"""``time_to_success``: GRPO (``configs/quickstart_grpo.yaml``) vs PCM (``configs/quickstart.yaml``)
trained with :func:`pcm_core.runner.train`, 5 seeds per method, each seed from its own warm start
(SFT seed = RL seed, the same for both methods), runs interleaved (seed by seed), evaluated on
``train.eval_episodes`` (192) fixed initial states every 5 steps. PCM runs twice GRPO's steps by default, about the same wall-clock, so
the two are compared over the same training time; the gap at equal steps is reported too.

Wall-clock is the training time of the RL steps (the sum of ``time/step_s``: rollout + select +
forward/backward + optimizer); the shared warm start (cached SFT) and the evaluations are excluded.
Time to target = training wall-clock up to the first evaluation whose success reaches ``target``.
The default target is 0.95 x GRPO's mean final evaluation success (rounded down to the
evaluation grid), i.e. "the success GRPO reaches"; a run's final success is the mean of its last
:data:`FINAL_EVALS` evaluations.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    CONFIGS, QUICK_TRAINING, fmt_range, machine, machine_line, resolve_device, stats, table, train_to_end, write_outputs,
)
from pcm_core.config import load_config
from pcm_core.plots import pyplot

METHODS = {"grpo": CONFIGS / "quickstart_grpo.yaml", "pcm": CONFIGS / "quickstart.yaml"}
SPLIT = ("rollout", "select", "forward_backward", "optimizer")
HISTORY_KEYS = ("step", "success_rate", "entropy", "kept_chunk_fraction")
"""Per-step metrics each run keeps (``benchmarks.warm_starts`` reads a run's first steps off them)."""


FINAL_EVALS = 3
"""Final success = mean of the last this many evaluations (3 x 64 episodes: a standard error of
about 3.5 points instead of 6 for one evaluation)."""


def settings(quick: bool, args: argparse.Namespace | None = None) -> dict[str, Any]:
    """Seeds, RL steps per method and the training overrides. Seed ``k`` of both methods starts from
    the warm start of SFT seed ``k`` (``train.sft.seed=null``), so a pair differs in the method only;
    PCM runs ``pcm_step_ratio`` times GRPO's steps, about GRPO's wall-clock (a PCM step costs about
    half a GRPO step here)."""
    s: dict[str, Any] = {
        "seeds": list(range(1 if quick else 5)),
        "grpo_steps": 3 if quick else 50,
        "pcm_step_ratio": 2.0,
        "overrides": ["train.sft.seed=null", *(["train.eval_every=3", *QUICK_TRAINING] if quick
                                               else ["train.eval_every=5", "train.eval_episodes=192"])],
        "target": None,
        "final_evals": FINAL_EVALS,
        "pcm_budget": None,  # None: configs/quickstart.yaml's (12)
        "pcm_overrides": [],  # a lever on the PCM runs only; GRPO stays the reference
        "methods": list(METHODS),  # one of them alone: runs to merge with the other's (:func:`merge`)
    }
    if args is not None:
        if getattr(args, "seeds", None):
            s["seeds"] = list(range(args.seeds))
        if getattr(args, "seed_list", None):
            s["seeds"] = [int(x) for x in args.seed_list.split(",")]
        if getattr(args, "steps", None):
            s["grpo_steps"] = args.steps
        if getattr(args, "pcm_step_ratio", None):
            s["pcm_step_ratio"] = args.pcm_step_ratio
        if getattr(args, "budgets", None):
            if not args.budgets.isdigit():
                raise SystemExit(f"time_to_success takes one budget, got --budgets {args.budgets}.\nFix: e.g. --budgets 24")
            s["pcm_budget"] = int(args.budgets)
        s["pcm_overrides"] += list(getattr(args, "pcm_set", None) or [])
        if getattr(args, "methods", None):
            methods = args.methods.split(",")
            if set(methods) - set(METHODS):
                raise SystemExit(f"time_to_success --methods {args.methods}: each must be one of {', '.join(METHODS)}.\n"
                                 "Fix: e.g. --methods pcm, then merge with a GRPO run of the same seeds")
            s["methods"] = [m for m in METHODS if m in methods]
        if getattr(args, "tiny", False):
            s["seeds"] = [0]
            s["grpo_steps"] = 1
            s["overrides"] += ["train.eval_every=1", "train.eval_episodes=2", "train.tasks_per_step=1",
                               "train.group_size=2", "train.sft.demos=4", "train.sft.epochs=1", "env.options.max_steps=128",
                               "pcm.budget=2"]
    s["steps"] = {"grpo": s["grpo_steps"], "pcm": max(1, round(s["grpo_steps"] * s["pcm_step_ratio"]))}
    return s


def one_run(method: str, seed: int, s: dict[str, Any], workdir: Path, cache_dir: str | None) -> dict[str, Any]:
    overrides = [*s["overrides"], f"train.steps={s['steps'][method]}", f"train.seed={seed}", "tracking.enabled=false",
                 f"train.output_dir={workdir / method}"]
    if cache_dir:
        overrides.append(f"train.sft.cache_dir={cache_dir}")
    if method == "pcm":  # PCM's budget and a lever; GRPO stays the reference
        if s["pcm_budget"] is not None:
            overrides.append(f"pcm.budget={s['pcm_budget']}")
        overrides += s["pcm_overrides"]
    config = load_config(METHODS[method], overrides)
    started = time.perf_counter()
    result = train_to_end(config)
    wall = time.perf_counter() - started
    history = result.history
    clock, curve = 0.0, []  # (step, training seconds so far, eval success) at every evaluation
    for row in history:
        clock += row.get("time/step_s", 0.0)
        if "eval_success_rate" in row:
            curve.append((int(row["step"]), clock, float(row["eval_success_rate"])))
    steps = [row for row in history if row.get("step", 0) > 0]
    split = {name: statistics.median([row.get(f"time/{name}_s", 0.0) for row in steps]) if steps else 0.0 for name in SPLIT}
    return {
        "method": method, "seed": seed, "steps": s["steps"][method], "wall_s_including_warm_start_and_eval": wall,
        "train_s": clock, "curve": curve, "final_success": final_success(curve, s["final_evals"]),
        "median_step_split_s": split,
        "history": [{key: row.get(key) for key in HISTORY_KEYS} for row in steps],
        "kept_chunk_fraction": statistics.median([row.get("kept_chunk_fraction", 1.0) for row in steps]) if steps else None,
        "config": config.model_dump(mode="json"),
    }


def final_success(curve: list[tuple[int, float, float]], evals: int) -> float:
    """Mean eval success of the last ``evals`` evaluations of ``curve``."""
    return statistics.mean(success for _, _, success in curve[-evals:]) if curve else float("nan")


def success_at_steps(curve: list[tuple[int, float, float]], steps: list[int]) -> float:
    """Mean eval success of ``curve`` at the given steps (those it evaluated)."""
    values = [success for step, _, success in curve if step in steps]
    return statistics.mean(values) if values else float("nan")


def reached_at(curve: list[tuple[int, float, float]], target: float) -> tuple[float, float]:
    """(RL step, training seconds) of the first evaluation that reaches ``target``; (inf, inf)
    when none did."""
    for step, clock, success in curve:
        if success >= target - 1e-9:
            return float(step), clock
    return math.inf, math.inf


def median_over_seeds(values: list[float]) -> float:
    """Median of a time or step count to the target over all seeds, a seed that never reached it
    counting as slower than any that did (``inf``): the median is ``inf`` when more than half of
    the seeds did not reach it (with an even count, when half did not)."""
    return statistics.median(values) if values else math.nan


def paired_speedup(grpo_s: float, pcm_s: float) -> float:
    """One seed's GRPO time to the target over PCM's (the same seed, so the same warm start and
    batch order): 0 when only GRPO reached it, inf when only PCM did, nan when neither did."""
    if math.isinf(grpo_s) and math.isinf(pcm_s):
        return math.nan
    return grpo_s / pcm_s if pcm_s > 0 else math.inf


def summarize(runs: list[dict[str, Any]], s: dict[str, Any]) -> dict[str, Any]:
    """Target, per-method summary and the headline keys from the runs of both methods.

    ``speedup_to_target`` = GRPO's median time to the target over PCM's, both over all seeds
    (:func:`median_over_seeds`): 0 when most PCM seeds never reached it. It splits into two
    factors, ``speedup_to_target ~= step_time_ratio / steps_to_target_ratio``: how much cheaper a
    PCM step is (GRPO's median seconds per step over PCM's) and how many more steps PCM needs to
    the target (PCM's median steps over GRPO's, medians over all seeds as for the time).
    """
    by = {m: [r for r in runs if r["method"] == m] for m in METHODS}
    episodes = by["grpo"][0]["config"]["train"]["eval_episodes"]
    grpo_final = statistics.mean(r["final_success"] for r in by["grpo"])
    target = s["target"] if s["target"] is not None else math.floor(0.95 * grpo_final * episodes) / episodes
    summary: dict[str, Any] = {}
    seed_times: dict[str, dict[int, float]] = {}  # method -> seed -> time to the target
    for method, rows in by.items():
        steps, times = zip(*(reached_at(r["curve"], target) for r in rows))
        seed_times[method] = {r["seed"]: t for r, t in zip(rows, times)}
        finals = [r["final_success"] for r in rows]
        summary[method] = {
            "median_time_to_target_s": median_over_seeds(list(times)),
            "median_steps_to_target": median_over_seeds(list(steps)),
            "step_s": statistics.median(r["train_s"] / r["steps"] for r in rows),
            "time_to_target_s": stats([t for t in times if math.isfinite(t)]), "reached": sum(math.isfinite(t) for t in times),
            "time_to_target_raw_s": list(times), "final_success": {
                **stats(finals), "mean": statistics.mean(finals), "std": statistics.pstdev(finals),
                "se": statistics.stdev(finals) / math.sqrt(len(finals)) if len(finals) > 1 else math.nan},
            "train_s": stats([r["train_s"] for r in rows]),
            "step_split_s": {name: statistics.median([r["median_step_split_s"][name] for r in rows]) for name in SPLIT},
        }
    seeds = sorted({r["seed"] for r in runs})
    per_seed = [paired_speedup(seed_times["grpo"][seed], seed_times["pcm"][seed]) for seed in seeds]
    grpo_last_steps = [step for step, _, _ in by["grpo"][0]["curve"][-s["final_evals"]:]]
    pcm_at_grpo_steps = statistics.mean(success_at_steps(r["curve"], grpo_last_steps) for r in by["pcm"])
    g, p = summary["grpo"]["median_time_to_target_s"], summary["pcm"]["median_time_to_target_s"]
    speedup = g / p if p > 0 and not (math.isinf(g) and math.isinf(p)) else math.nan
    grpo_steps, pcm_steps = summary["grpo"]["median_steps_to_target"], summary["pcm"]["median_steps_to_target"]
    return {
        "seeds": min(len(by["grpo"]), len(by["pcm"])), "target_success": target, "speedup_to_target": speedup, "speedup_per_seed": per_seed,
        "step_time_ratio": summary["grpo"]["step_s"] / summary["pcm"]["step_s"],
        "steps_to_target_ratio": pcm_steps / grpo_steps if math.isfinite(grpo_steps) and grpo_steps > 0 else math.nan,
        "final_success_gap_points": 100.0 * (summary["grpo"]["final_success"]["mean"] - summary["pcm"]["final_success"]["mean"]),
        "final_success_gap_points_equal_steps": 100.0 * (summary["grpo"]["final_success"]["mean"] - pcm_at_grpo_steps),
        "summary": summary, "runs": runs,
        "note": "time = RL-step wall-clock (rollout+select+fwd/bwd+optimizer), warm start and evaluation excluded; "
        f"final success = mean of the last {s['final_evals']} evaluations; PCM runs {s['pcm_step_ratio']:g}x GRPO's steps; "
        "time to target = median over all seeds, a seed that never reached it counting as infinitely slow",
    }


def run(quick: bool, device: str, out: Path, args: argparse.Namespace | None = None, log=print) -> dict[str, Any]:
    s = settings(quick, args)
    if device != "auto":
        s["overrides"].append(f"train.device={device}")
    started = time.perf_counter()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        # quick (and tiny) runs use a throw-away warm-start cache so they never mix with real ones
        cache = str(Path(tmp) / "cache") if quick else None
        for seed in s["seeds"]:
            order = ["grpo", "pcm"] if seed % 2 == 0 else ["pcm", "grpo"]
            for method in [m for m in order if m in s["methods"]]:
                r = one_run(method, seed, s, Path(tmp), cache)
                runs.append(r)
                log(f"  {method} seed {seed}: final success {r['final_success']:.2f}, train {r['train_s']:.1f}s, "
                    f"curve {[(st, round(sc, 2)) for st, _, sc in r['curve']]}")
    result = {"benchmark": "time_to_success", "machine": machine(), "device": str(resolve_device(device)), "settings": s,
              "duration_s": time.perf_counter() - started}
    if len(s["methods"]) < len(METHODS):  # one method's runs: no comparison until merged with the other's
        result["runs"] = runs
        write_outputs(out, "time_to_success", result, runs_markdown(result), figure(result))
        return result
    result.update(summarize(runs, s))
    write_outputs(out, "time_to_success", result, markdown(result), figure(result))
    return result


def runs_markdown(result: dict[str, Any]) -> str:
    """The runs of a one-method result (``--methods``), before :func:`merge` pairs them with the other's."""
    rows = [[r["method"], r["seed"], r["steps"], f"{r['final_success']:.3f}", f"{r['train_s']:.1f}",
             " ".join(f"{step}:{success:.2f}" for step, _, success in r["curve"])] for r in result["runs"]]
    return "\n".join([
        f"# time_to_success: {', '.join(result['settings']['methods'])} runs only",
        "",
        f"{machine_line(result['machine'], result['device'])} {overrides_text(result['settings'])}. "
        "Compare with `python -m benchmarks.time_to_success grpo=GRPO.json pcm=PCM.json`.",
        "",
        table(["method", "seed", "RL steps", "final success", "train s", "eval success by step"], rows),
    ])


def overrides_text(s: dict[str, Any]) -> str:
    """The markdown's account of the overrides both methods ran with, and of PCM's own."""
    return f"overrides {s['overrides']}" + (f", PCM only {s['pcm_overrides']}" if s.get("pcm_overrides") else "")


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    pcm_budget = next(r["config"]["pcm"]["budget"] for r in result["runs"] if r["method"] == "pcm")
    rows = []
    for method, e in result["summary"].items():
        median = e["median_time_to_target_s"]
        tt = f"{median:.1f}" if math.isfinite(median) else "not reached by most seeds"
        if e["time_to_target_s"]["n"]:
            tt += f" (reached: {e['time_to_target_s']['min']:.1f}-{e['time_to_target_s']['max']:.1f})"
        sp = e["step_split_s"]
        rows.append([method, result["settings"]["steps"][method], f"{e['reached']}/{len(e['time_to_target_raw_s'])}", tt,
                     f"{e['final_success']['mean']:.3f} +- {e['final_success']['se']:.3f}", fmt_range(e["train_s"], 1),
                     *(f"{sp[name]:.2f}" for name in SPLIT)])
    return "\n".join([
        "# time_to_success: GRPO vs PCM on the embedded default",
        "",
        f"{machine_line(m, result['device'])} {result['seeds']} seed(s) per method, each from its own warm start; "
        f"PCM budget B={pcm_budget}; "
        f"{overrides_text(result['settings'])}. {result['note']}.",
        "",
        table(["method", "RL steps", "reached", "time to target s, median over seeds", "final success (mean +- SE over seeds)", "train s",
               *(f"{n} s/step" for n in SPLIT)], rows),
        "",
        f"target success {result['target_success']:.3f}; **speedup_to_target** {result['speedup_to_target']:.2f} "
        f"(PCM reached the target in {result['summary']['pcm']['reached']} of {len(result['summary']['pcm']['time_to_target_raw_s'])} "
        "seeds; 0 when most did not); per seed (GRPO's time over PCM's, seed by seed) "
        f"{' / '.join('n/a' if x is None or not math.isfinite(x) else f'{x:.2f}' for x in result['speedup_per_seed'])}; "
        f"**final_success_gap_points** (GRPO - PCM, each over its own steps) {result['final_success_gap_points']:.1f}; "
        f"at GRPO's steps {result['final_success_gap_points_equal_steps']:.1f}.",
        "",
        f"Why: a PCM step took 1/{result['step_time_ratio']:.2f} of a GRPO step (**step_time_ratio**; the rollout, "
        f"which PCM does not shorten, caps it), and {steps_needed(result)}; "
        "speedup_to_target ~= step_time_ratio / steps_to_target_ratio.",
    ])


def steps_needed(result: dict[str, Any]) -> str:
    """The markdown's account of ``steps_to_target_ratio`` (null in the JSON when it is undefined)."""
    ratio = result.get("steps_to_target_ratio")
    medians = f"medians over seeds: {steps_text(result['summary']['pcm'])} against {steps_text(result['summary']['grpo'])}"
    if ratio is None or not math.isfinite(ratio):
        return f"**steps_to_target_ratio** is undefined: most seeds of one method never reached the target ({medians})"
    return f"PCM needed {ratio:.2f}x GRPO's steps to the target (**steps_to_target_ratio**, {medians})"


def steps_text(entry: dict[str, Any]) -> str:
    """A method's median steps to the target, or "never"."""
    steps = entry["median_steps_to_target"]
    return f"{steps:.0f}" if steps is not None and math.isfinite(steps) else "never"


def figure(result: dict[str, Any]):
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6.5, 4))
    colors = {"grpo": "tab:blue", "pcm": "tab:orange"}
    for r in result["runs"]:
        ax.plot([c[1] for c in r["curve"]], [c[2] for c in r["curve"]], marker="o", color=colors[r["method"]], alpha=0.7,
                label=f"{r['method']} seed {r['seed']}")
    if "target_success" in result:  # a one-method result has none yet
        ax.axhline(result["target_success"], color="k", ls="--", label="target")
    ax.set_xlabel("training wall-clock (s, excl. warm start and eval)")
    ax.set_ylabel("eval success")
    ax.legend(fontsize=7)
    return fig


def merge(results: list[dict[str, Any]], methods: list[str | None] | None = None) -> dict[str, Any]:
    """One result from several runs of this benchmark, e.g. two processes of disjoint ``--seed-list``
    sharing a 2-core machine, or a lever's ``--methods pcm`` runs with an earlier run's GRPO runs of
    the same seeds. ``methods[i]`` (None: all) is the method whose runs are taken from ``results[i]``.
    Each (method, seed) comes from one result, and every seed needs both methods."""
    methods = methods or [None] * len(results)
    runs = [run for result, method in zip(results, methods) for run in result["runs"] if method in (None, run["method"])]
    pairs = [(run["method"], run["seed"]) for run in runs]
    if len(set(pairs)) != len(pairs):
        raise SystemExit(f"time_to_success results to merge share (method, seed) runs: {sorted(pairs)}.\n"
                         "Fix: merge runs of disjoint --seed-list, or take one method of a file with METHOD=FILE.json")
    seeds = {method: sorted(seed for m, seed in pairs if m == method) for method in METHODS}
    if seeds["grpo"] != seeds["pcm"]:
        raise SystemExit(f"time_to_success results to merge have GRPO seeds {seeds['grpo']} and PCM seeds {seeds['pcm']}.\n"
                         "Fix: merge results that hold both methods for the same seeds")
    for key in ("overrides", "grpo_steps", "pcm_step_ratio", "final_evals"):
        if len({str(result["settings"][key]) for result in results}) > 1:
            raise SystemExit(f"time_to_success results to merge differ in settings '{key}'.\nFix: merge runs of one protocol")
    pcm_source = next((result for result, method in zip(results, methods)
                       if method in (None, "pcm") and any(run["method"] == "pcm" for run in result["runs"])), None)
    if pcm_source is None:
        raise SystemExit("time_to_success results to merge hold no PCM runs.\nFix: add a result with PCM runs")
    s = {**pcm_source["settings"], "seeds": seeds["pcm"], "methods": list(METHODS)}
    merged = {"benchmark": "time_to_success", "machine": pcm_source["machine"], "device": pcm_source["device"], "settings": s,
              **summarize(runs, s), "duration_s": max(result["duration_s"] for result in results),
              "merged_from": len(results)}
    if len({json.dumps(result["machine"], sort_keys=True) for result in results}) > 1:
        merged["machines"] = [result["machine"] for result in results]
    return merged


def merge_main(argv: list[str] | None = None) -> None:
    """``python -m benchmarks.time_to_success [METHOD=]A.json [METHOD=]B.json ... [--out DIR]``."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.time_to_success",
        description="Merge time_to_success results (disjoint --seed-list runs, or one method's runs paired with "
        "another result's) into one result: JSON + markdown + PNG.",
    )
    parser.add_argument("sources", nargs="+", metavar="[METHOD=]RESULT.json",
                        help="a time_to_success result; METHOD= (grpo or pcm) takes only that method's runs from it")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="folder for time_to_success.*")
    args = parser.parse_args(argv)
    sources = [arg.split("=", 1) if "=" in arg else [None, arg] for arg in args.sources]
    for method, path in sources:
        if method not in (None, *METHODS):
            parser.error(f"method '{method}' in '{method}={path}' is not one of {', '.join(METHODS)}")
        if not Path(path).is_file():
            parser.error(f"no result file '{path}'")
    merged = merge([json.loads(Path(path).read_text()) for _, path in sources], [method for method, _ in sources])
    write_outputs(args.out, "time_to_success", merged, markdown(merged), figure(merged))
    print(markdown(merged))


if __name__ == "__main__":
    merge_main()
