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
when every chunk is kept (whatever the trajectory lengths), so one ``g`` serves both estimators.

Then every variant is trained: ``pcm-run``'s config (``configs/quickstart.yaml``) plus the
variant's overrides, ``--steps`` RL steps (50 in full mode, 0 skips training) from the shared
cached warm start, ``--seeds`` seeds each; the evaluation success of the warm start and of the
final policy is reported.
"""

from __future__ import annotations

import argparse
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
    "proxy uniform": ["pcm.proxy=uniform"],
    "proxy entropy": ["pcm.proxy=entropy"],
    "sampler uniform": ["pcm.sampler=uniform"],
    "sampler topk": ["pcm.sampler=topk"],
}


FULL_EVAL_EPISODES = 192
"""Episodes of the warm-start and final evaluations in full mode: a standard error of about 3.5
points at 40% success (6 with the default 64)."""


def settings(quick: bool, args: argparse.Namespace | None = None) -> dict[str, Any]:
    s: dict[str, Any] = {
        "budget": 12, "groups": 2, "group_size": 4, "history_batches": 1 if quick else 3,
        "resamples": 6 if quick else 24, "max_steps": 256, "seed": 0, "warm_start": not quick, "size": None,  # None: the default policy (1m), same warm-start cache as pcm-run
        "train_steps": 2 if quick else 50, "train_seeds": 1,
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
            s["train_seeds"] = args.seeds
        if getattr(args, "tiny", False):
            s.update(resamples=2, history_batches=1, groups=1, group_size=2, max_steps=64, budget=4, warm_start=False,
                     train_steps=1, train_overrides=["train.sft.demos=4", "train.sft.epochs=1", "train.tasks_per_step=1",
                                                     "train.group_size=2", "train.eval_episodes=2", "env.options.max_steps=64",
                                                     "pcm.budget=4"])
    return s


def train_variants(s: dict[str, Any], quick: bool, device: str, log=print) -> dict[str, dict[str, Any]]:
    """Train every variant from the shared warm start; warm-start and final eval success per seed."""
    finals: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cache = [f"train.sft.cache_dir={Path(tmp) / 'cache'}"] if quick else []  # quick runs never touch the real cache
        for index, (name, overrides) in enumerate(VARIANTS.items()):
            runs = []
            for seed in range(s["train_seeds"]):
                config = load_config(CONFIGS / "quickstart.yaml", [
                    *s["train_overrides"], *cache, *overrides, f"train.steps={s['train_steps']}", "train.eval_every=0",
                    "train.sft.seed=0",  # every seed and variant starts from the one warm start
                    f"train.seed={seed}", "tracking.enabled=false", f"train.output_dir={Path(tmp) / f'v{index}s{seed}'}",
                    *([f"train.device={device}"] if device != "auto" else []),
                ])
                started = time.perf_counter()
                history = train_to_end(config).history
                evals = [row["eval_success_rate"] for row in history if "eval_success_rate" in row]
                runs.append({"seed": seed, "warm_start_success": evals[0], "final_success": evals[-1],
                             "wall_s": time.perf_counter() - started})
            finals[name] = {"runs": runs, "final_success_mean": statistics.mean(r["final_success"] for r in runs),
                            "warm_start_success_mean": statistics.mean(r["warm_start_success"] for r in runs)}
            log(f"  trained {name:18s} eval success {finals[name]['warm_start_success_mean']:.3f} -> "
                f"{finals[name]['final_success_mean']:.3f} ({len(runs)} seed(s), {s['train_steps']} steps)")
    return finals


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
        }
        log(f"  {name:18s} mse {results[name]['mse_rel']:.3f} var {results[name]['variance_rel']:.3f} "
            f"bias2 {results[name]['bias2_rel']:.3f} cos {results[name]['cosine_to_full']:.3f} q {[round(x, 3) for x in q]}")
    if s["train_steps"] > 0:
        for name, trained in train_variants(s, quick, device, log).items():
            results[name]["training"] = trained
    result = {
        "benchmark": "ablations", "machine": machine(), "device": str(dev), "settings": s, "warm_start": warm,
        "batches": notes, "full_gradient_norm2": g_norm2, "variants": results,
        "duration_s": time.perf_counter() - started,
    }
    write_outputs(out, "ablations", result, markdown(result), figure(result))
    return result


def markdown(result: dict[str, Any]) -> str:
    s, m = result["settings"], result["machine"]
    def trained(v: dict[str, Any]) -> str:
        t = v.get("training")
        return f"{t['warm_start_success_mean']:.3f} -> {t['final_success_mean']:.3f}" if t else "not trained"

    rows = [[name, v["kept_chunks"], f"{v['mse_rel']:.3f}", f"{v['variance_rel']:.3f}", f"{v['bias2_rel']:.3f}",
             f"{v['cosine_to_full']:.3f}", " ".join(f"{x:.2f}" for x in v["keep_probs"]), trained(v)]
            for name, v in result["variants"].items()]
    return "\n".join([
        "# ablations: gradient-estimator quality at the same budget (one batch, resampled masks)",
        "",
        f"{machine_line(m, result['device'])} Model tinyvla {s['size'] or '1m (default)'}; B={s['budget']}; "
        f"{s['groups']}x{s['group_size']} trajectories; {s['history_batches']} history batch(es) folded into q; "
        f"{s['resamples']} resampled masks; warm start: {result['warm_start'] or 'none (random init, relabelled outcomes)'}. "
        "Errors are relative to the squared norm of the full-batch GRPO gradient.",
        "",
        table(["variant", "kept chunks", "MSE / |g|^2", "variance / |g|^2", "bias^2 / |g|^2", "cos(g_r, g)", "q per phase",
               "eval success: warm start -> final"], rows),
        "",
        f"Training: `pcm-run`'s config plus the variant's overrides, {s['train_steps']} RL steps from the shared warm start, "
        f"{s['train_seeds']} seed(s), extra overrides {s['train_overrides']}; final = evaluation after the last step.",
    ])


def figure(result: dict[str, Any]):
    plt = pyplot()

    names = list(result["variants"])
    var = [result["variants"][n]["variance_rel"] for n in names]
    bias = [result["variants"][n]["bias2_rel"] for n in names]
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.bar(names, var, label="variance / |g|^2")
    ax.bar(names, bias, bottom=var, label="bias^2 / |g|^2")
    ax.set_ylabel("MSE of the update direction (relative)")
    ax.tick_params(axis="x", rotation=35)
    ax.legend()
    ax.set_title(f"B={result['settings']['budget']}: error vs full-batch GRPO gradient")
    return fig
