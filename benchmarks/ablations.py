"""``ablations``: gradient-estimator quality of PCM's variants at the same budget, on one batch.

A few *history* batches are folded into the keep-probabilities first (so that the online EMA,
the frozen first estimate and the exploration floor actually differ), then one *target* batch
is used for everything: the full-batch gradient ``g`` (the ``all`` sampler, plain GRPO) and, for
each variant, ``R`` gradients ``g_r`` over resampled masks (same q, a different sampling seed).
Reported, all relative to ``||g||^2``: the MSE ``E||g_r - g||^2``, the variance ``E||g_r - mean||^2``,
the squared bias ``||mean - g||^2`` minus its sampling noise ``tr(Cov)/R`` (so it can dip below 0), and the mean cosine between ``g_r`` and ``g``. Model: the 1m
tiny VLA; with ``--warm-start`` (default in full mode) the cached SFT warm start of the embedded
default, so outcomes are real; otherwise random init with relabelled outcomes (see common.py).
The default aggregation, ``seq_mean``, equals the ``traj_sum`` loss the ``iw`` estimator targets
when every chunk is kept (whatever the trajectory lengths), so one ``g`` serves every estimator
(``masked``, and the ``traj_sum`` targets of ``iw`` and ``stratified``).

Then every variant is trained: ``pcm-run``'s config (``configs/quickstart.yaml``) plus the
variant's overrides, ``--steps`` RL steps (50 in full mode, 0 skips training), ``--seeds`` seeds
(3 in full mode; or ``--seed-list``), each seed from its own warm start (SFT seed = RL seed, as
``pcm-run`` does) shared by every variant, so variants compare paired. Reported per variant: the
evaluation success of the warm start and of the final policy, the gain in points with its standard
error over seeds, and the paired difference to the default's gain. A variant whose gradients on
The uniform chunk draws of ``no concentration``, ``proxy uniform`` and ``sampler uniform`` are the
same masks (:data:`SAME_MASKS`): checked bit for bit on the target batch's gradients, they are
trained once and reported under each name.

``python -m benchmarks.ablations A.json,B.json [--out DIR]`` merges runs of disjoint ``--seed-list``s.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import (
    CONFIGS, QUICK_TRAINING, batch_gradient, collect_batch, config_for, fold_into_keep_probs, machine, machine_line,
    make_learner, masked_gradient, start_on_batch, table, train_to_end, write_outputs,
)
from pcm_core.config import load_config
from pcm_core.plots import pyplot

VARIANTS: dict[str, list[str]] = {
    "pcm (default)": [],
    "no concentration": ["pcm.concentration=false"],
    "no exploration": ["pcm.exploration=false"],
    "no online": ["pcm.online=false"],
    "iw estimator": ["pcm.estimator=iw"],
    "stratified estimator": ["pcm.estimator=stratified"],
    "proxy uniform": ["pcm.proxy=uniform"],
    "proxy entropy": ["pcm.proxy=entropy"],
    "sampler uniform": ["pcm.sampler=uniform"],
    "sampler topk": ["pcm.sampler=topk"],
}

SAME_MASKS = {"proxy uniform": "no concentration", "sampler uniform": "no concentration"}
"""Variants that draw exactly the masks of another: equal keep-probabilities and the pcm sampler's
systematic draw over a random permutation are uniform chunk draws with the uniform sampler's
random numbers. Trained once, and only when their gradients on every resampled mask of the
target batch are bit-identical (otherwise each is trained on its own)."""


FULL_EVAL_EPISODES = 192
"""Episodes of the warm-start and final evaluations in full mode: a standard error of about 3.5
points at 40% success (6 with the default 64)."""


def settings(quick: bool, args: argparse.Namespace | None = None) -> dict[str, Any]:
    s: dict[str, Any] = {
        "budget": 12, "groups": 2, "group_size": 4, "history_batches": 1 if quick else 3,
        "resamples": 6 if quick else 24, "max_steps": 256, "seed": 0, "warm_start": not quick, "size": None,  # None: the default policy (1m), same warm-start cache as pcm-run
        "train_steps": 2 if quick else 50, "train_seeds": [0] if quick else [0, 1, 2],
        "train_overrides": QUICK_TRAINING if quick else [f"train.eval_episodes={FULL_EVAL_EPISODES}"],
    }
    if args is not None:
        if getattr(args, "max_steps", None):
            s["max_steps"] = args.max_steps
        if getattr(args, "repeats", None):
            s["resamples"] = args.repeats
        if getattr(args, "steps", None) is not None:
            s["train_steps"] = args.steps
        if getattr(args, "seeds", None):
            s["train_seeds"] = list(range(args.seeds))
        if getattr(args, "seed_list", None):
            s["train_seeds"] = [int(x) for x in args.seed_list.split(",")]
        if getattr(args, "tiny", False):
            s.update(resamples=2, history_batches=1, groups=1, group_size=2, max_steps=64, budget=4, warm_start=False,
                     train_steps=1, train_seeds=[0], train_overrides=["train.sft.demos=4", "train.sft.epochs=1", "train.tasks_per_step=1",
                                                     "train.group_size=2", "train.eval_episodes=2", "env.options.max_steps=64",
                                                     "pcm.budget=4"])
    return s


def train_variants(s: dict[str, Any], quick: bool, device: str, same_as: dict[str, str], log=print) -> dict[str, list[dict[str, Any]]]:
    """Train every variant from each seed's warm start: warm-start and final eval success per seed.
    A variant in ``same_as`` (it draws the masks of an earlier one) reuses that variant's runs."""
    trained: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cache = [f"train.sft.cache_dir={Path(tmp) / 'cache'}"] if quick else []  # quick runs never touch the real cache
        for index, (name, overrides) in enumerate(VARIANTS.items()):
            if name in same_as:
                trained[name] = trained[same_as[name]]
                log(f"  {name:18s} trained as {same_as[name]} (the same masks)")
                continue
            runs = []
            for seed in s["train_seeds"]:
                config = load_config(CONFIGS / "quickstart.yaml", [
                    *s["train_overrides"], *cache, *overrides, f"train.steps={s['train_steps']}", "train.eval_every=0",
                    f"train.seed={seed}", "tracking.enabled=false", f"train.output_dir={Path(tmp) / f'v{index}s{seed}'}",
                    *([f"train.device={device}"] if device != "auto" else []),
                ])  # train.sft.seed stays unset: the warm start of SFT seed = RL seed, shared by every variant
                started = time.perf_counter()
                history = train_to_end(config).history
                evals = [row["eval_success_rate"] for row in history if "eval_success_rate" in row]
                runs.append({"seed": seed, "warm_start_success": evals[0], "final_success": evals[-1],
                             "wall_s": time.perf_counter() - started})
                log(f"  trained {name:18s} seed {seed}: eval success {evals[0]:.3f} -> {evals[-1]:.3f} "
                    f"({s['train_steps']} steps, {runs[-1]['wall_s']:.0f}s)")
            trained[name] = runs
    return trained


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and its standard error (NaN for one value)."""
    return statistics.mean(values), statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan


def summarize_training(trained: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per variant: mean warm-start and final success, gain in points (mean, SE over seeds) and the
    gain paired with the default's on the same seeds (mean, SE of the per-seed differences)."""
    reference = {r["seed"]: r for r in trained["pcm (default)"]}
    summaries = {}
    for name, runs in trained.items():
        gains = [100 * (r["final_success"] - r["warm_start_success"]) for r in runs]
        paired = [100 * (r["final_success"] - reference[r["seed"]]["final_success"]) for r in runs]
        gain, gain_se = mean_se(gains)
        diff, diff_se = mean_se(paired)
        summaries[name] = {"runs": runs, "seeds": [r["seed"] for r in runs],
                           "warm_start_success_mean": statistics.mean(r["warm_start_success"] for r in runs),
                           "final_success_mean": statistics.mean(r["final_success"] for r in runs),
                           "gain_points": gain, "gain_points_se": gain_se,
                           "vs_default_points": diff, "vs_default_points_se": diff_se}
    return summaries


def run(quick: bool, device: str, out: Path, args: argparse.Namespace | None = None, log=print) -> dict[str, Any]:
    s = settings(quick, args)
    started = time.perf_counter()
    common = [f"env.options.max_steps={s['max_steps']}", "train.micro_batch_size=64",
              f"train.tasks_per_step={s['groups']}", f"train.group_size={s['group_size']}"]
    base = config_for("pcm", s["budget"], s["size"], overrides=common)
    dev, env, policy = start_on_batch(s, device, base)
    warm = None
    if s["warm_start"]:
        from pcm_core.warm_start import warm_start

        warm = str(warm_start(policy, env, base, log=log))
    # history batches keep their true outcomes (a batch with no mixed group leaves q unchanged, as in
    # training); the target is the first batch with a truly mixed group, relabelled only if none comes
    batches, notes, target_index = [], [], None
    for h in range(s["history_batches"] + 4):
        b, n = collect_batch(policy, env, s["groups"], s["group_size"], s["seed"] + 1 + h, ensure_mixed=False)
        batches.append(b)
        notes.append(n)
        mixed = any(0 < float(b.rewards[b.group_index == g].mean()) < 1 for g in b.group_index.unique())
        if target_index is None and mixed:
            target_index = h
        if len(batches) >= s["history_batches"] + 1 and (target_index is not None or h >= s["history_batches"] + 3):
            break
    if target_index is None:  # no truly mixed batch: relabel the last one
        target_index = len(batches) - 1
        batches[-1], notes[-1] = collect_batch(policy, env, s["groups"], s["group_size"], s["seed"] + len(batches))
    env.close()
    target = batches[target_index]
    history = [b for i, b in enumerate(batches) if i != target_index][-s["history_batches"]:]
    notes = [{**n, "role": "target" if i == target_index else "history"} for i, n in enumerate(notes)]
    log(f"batches: true success {[n['true_success'] for n in notes]}, relabelled {[n['relabelled'] for n in notes]}")

    full_learner = make_learner(policy, config_for("all", s["budget"], s["size"], overrides=common))
    g = batch_gradient(full_learner, full_learner.select(target).batch)  # full-batch GRPO gradient
    g_norm2 = float(g.pow(2).sum())
    results: dict[str, Any] = {}
    stacks: dict[str, torch.Tensor] = {}
    same_as: dict[str, str] = {}  # the SAME_MASKS whose gradients on every mask are bit-identical
    for name, overrides in VARIANTS.items():
        learner = make_learner(policy, config_for("pcm", s["budget"], s["size"], overrides=[*common, *overrides]))
        state = fold_into_keep_probs(learner, history)
        grads = []
        q = None
        for r in range(s["resamples"]):
            selected, grad = masked_gradient(learner, target, state, seed=1000 + r)
            q = selected.keep_probs.tolist()
            grads.append(grad)
        stack = torch.stack(grads)  # [R, params]
        if name in SAME_MASKS and torch.equal(stacks[SAME_MASKS[name]], stack):
            same_as[name] = SAME_MASKS[name]
        stacks[name] = stack
        mean = stack.mean(0)
        results[name] = {
            "overrides": overrides,
            "keep_probs": q,
            "kept_chunks": int(selected.selection.keep.sum()),
            "mse_rel": float((stack - g).pow(2).sum(1).mean()) / g_norm2,
            # unbiased tr(Cov) over the R masks, so that mse = bias^2 + variance
            "variance_rel": float((stack - mean).pow(2).sum(1).sum()) / max(len(grads) - 1, 1) / g_norm2,
            # E||mean - g||^2 = bias^2 + tr(Cov) / R: remove the sampling noise of the mean (unbiased)
            "bias2_rel": (float((mean - g).pow(2).sum()) - float((stack - mean).pow(2).sum(1).sum()) / max(len(grads) - 1, 1)
                          / len(grads)) / g_norm2,
            "cosine_to_full": float(torch.nn.functional.cosine_similarity(stack, g[None], dim=1).mean()),
            "same_masks_as": same_as.get(name),
        }
        log(f"  {name:18s} mse {results[name]['mse_rel']:.3f} var {results[name]['variance_rel']:.3f} "
            f"bias2 {results[name]['bias2_rel']:.3f} cos {results[name]['cosine_to_full']:.3f} q {[round(x, 3) for x in q]}")
    if s["train_steps"] > 0:
        for name, trained in summarize_training(train_variants(s, quick, device, same_as, log)).items():
            results[name]["training"] = trained
    result = {
        "benchmark": "ablations", "machine": machine(), "device": str(dev), "settings": s, "warm_start": warm,
        "batches": notes, "full_gradient_norm2": g_norm2, "variants": results,
        "duration_s": time.perf_counter() - started,
    }
    write_outputs(out, "ablations", result, markdown(result), figure(result))
    return result


def merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from runs of this benchmark on disjoint ``--seed-list``s (the same settings
    otherwise, e.g. two processes sharing a 2-core machine): the first run's estimator part, every
    run's trainings summarised together in seed order."""
    seeds = [seed for result in results for seed in result["settings"]["train_seeds"]]
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"ablations results to merge share seeds: {sorted(seeds)}.\nFix: merge runs of disjoint --seed-list")
    trained = {name: sorted((r for result in results for r in result["variants"][name]["training"]["runs"]),
                            key=lambda r: r["seed"]) for name in results[0]["variants"]}
    variants = {name: {**v, "training": t} for (name, v), t in zip(results[0]["variants"].items(),
                                                                   summarize_training(trained).values())}
    return {**results[0], "settings": {**results[0]["settings"], "train_seeds": sorted(seeds)}, "variants": variants,
            "duration_s": max(result["duration_s"] for result in results), "merged_from": len(results)}


def markdown(result: dict[str, Any]) -> str:
    s, m = result["settings"], result["machine"]
    def trained(v: dict[str, Any]) -> list[str]:
        t = v.get("training")
        if not t:
            return ["not trained", "", ""]
        se = lambda x: "" if math.isnan(x) else f" ± {x:.1f}"  # noqa: E731
        return [f"{t['warm_start_success_mean']:.3f} -> {t['final_success_mean']:.3f}",
                f"{t['gain_points']:+.1f}{se(t['gain_points_se'])}", f"{t['vs_default_points']:+.1f}{se(t['vs_default_points_se'])}"]

    rows = [[name + (f" (= {v['same_masks_as']}: the same masks)" if v.get("same_masks_as") else ""), v["kept_chunks"],
             f"{v['mse_rel']:.3f}", f"{v['variance_rel']:.3f}", f"{v['bias2_rel']:.3f}",
             f"{v['cosine_to_full']:.3f}", " ".join(f"{x:.2f}" for x in v["keep_probs"]), *trained(v)]
            for name, v in result["variants"].items()]
    return "\n".join([
        "# ablations: gradient-estimator quality at the same budget (one batch, resampled masks), then training",
        "",
        f"{machine_line(m, result['device'])} Model tinyvla {s['size'] or '1m (default)'}; B={s['budget']}; "
        f"{s['groups']}x{s['group_size']} trajectories; {s['history_batches']} history batch(es) folded into q; "
        f"{s['resamples']} resampled masks; warm start: {result['warm_start'] or 'none (random init, relabelled outcomes)'}. "
        "Errors are relative to the squared norm of the full-batch GRPO gradient.",
        "",
        table(["variant", "kept chunks", "MSE / |g|^2", "variance / |g|^2", "bias^2 / |g|^2", "cos(g_r, g)", "q per phase",
               "eval success: warm start -> final (mean)", "gain, points (± SE)", "final vs default, paired points (± SE)"], rows),
        "",
        f"Training: `pcm-run`'s config plus the variant's overrides, {s['train_steps']} RL steps, seeds {s['train_seeds']}, "
        f"each seed from its own warm start (SFT seed = RL seed) shared by every variant; extra overrides "
        f"{s['train_overrides']}; final = evaluation after the last step. Standard errors are over seeds.",
    ])


def figure(result: dict[str, Any]):
    """Left: the estimator error per variant; right (when trained): the gain in eval success, mean and SE over seeds."""
    plt = pyplot()

    names = list(result["variants"])
    var = [result["variants"][n]["variance_rel"] for n in names]
    bias = [result["variants"][n]["bias2_rel"] for n in names]
    trained = [n for n in names if result["variants"][n].get("training")]
    fig, axes = plt.subplots(1, 2 if trained else 1, figsize=(15 if trained else 9, 4), squeeze=False)
    ax = axes[0, 0]
    ax.bar(names, var, label="variance / |g|^2")
    ax.bar(names, bias, bottom=var, label="bias^2 / |g|^2")
    ax.set_ylabel("MSE of the update direction (relative)")
    ax.tick_params(axis="x", rotation=35)
    ax.legend()
    ax.set_title(f"B={result['settings']['budget']}: error vs full-batch GRPO gradient")
    if trained:
        t = [result["variants"][n]["training"] for n in trained]
        ax = axes[0, 1]
        ax.bar(trained, [x["gain_points"] for x in t],
               yerr=[0.0 if math.isnan(x["gain_points_se"]) else x["gain_points_se"] for x in t], capsize=3)
        ax.axhline(0.0, color="k", lw=0.8)
        ax.set_ylabel("eval success gain, points (mean ± SE over seeds)")
        ax.tick_params(axis="x", rotation=35)
        ax.set_title(f"{result['settings']['train_steps']} RL steps, seeds {result['settings']['train_seeds']}")
    return fig


if __name__ == "__main__":  # python -m benchmarks.ablations A.json,B.json [--out DIR]: merge disjoint seed lists
    import json
    import sys

    out = Path(sys.argv[sys.argv.index("--out") + 1]) if "--out" in sys.argv else Path("benchmarks/results")
    merged = merge([json.loads(Path(path).read_text()) for path in sys.argv[1].split(",")])
    write_outputs(out, "ablations", merged, markdown(merged), figure(merged))
    print(markdown(merged))
