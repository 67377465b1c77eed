"""``gradient_noise``: how much of the rollout batch's information PCM's masked update keeps.

A GRPO update is already noisy: two independent rollout batches give different gradients. PCM adds
a second noise, the choice of the kept chunks. This benchmark measures both on batches of the size
``pcm-run`` trains on (8 groups x 8 trajectories, the cached warm start of the embedded default;
``--config FILE`` measures any ``pcm-run`` config instead: its env, policy and batch shape):
``K`` independent rollout batches, and on each of them the full GRPO gradient and, per variant,
the gradients of ``R`` independent masks. Per variant, with ``g_br`` the gradient of mask ``r`` on
batch ``b`` and ``g_b`` its mean over the masks:

- mask variance ``E||g_br - g_b||^2`` (the noise of the chunk choice);
- batch variance ``Var_b(g_b)`` (the noise of the rollouts, the same estimator's own units);
- effective batch fraction ``batch / (batch + mask)``: PCM's update is as noisy, relative to its
  signal, as a full GRPO update on this fraction of the trajectories. Equal to the kept chunk
  fraction when the chunks of a trajectory carry independent information (nothing to save by
  dropping them); near 1 when they are redundant (dropping them is free);
- GRPO-relative fraction ``f_grpo = Var(GRPO's update) / Var(the variant's update)``, both totals
  (batch + mask): the same comparison in GRPO's units. ``f`` measures each variant against its own
  batch variance, so a weighting that concentrates on fewer chunks (PCM's phases), whose expected
  update averages fewer chunks and varies more from batch to batch, looks better there than it
  is; ``f_grpo`` counts that too, and is the fair one when both updates carry signals of the
  same size (the masked estimator's weights keep the scale: a weighted mean of the same
  per-token gradients), which ``K`` = 8 batches cannot check: their signal estimates are noise;
- signal to noise ``||E g||^2 / Var(g)``, with ``||E g||^2`` estimated without bias from ``K`` means.

With Adam, whose step is normalised by the gradient's noise, the per-step progress of a
noise-dominated update scales with signal / noise, i.e. with ``sqrt(f)`` relative to GRPO, so
``1 / sqrt(f)`` estimates how many more RL steps PCM needs than GRPO to reach the same success
(``docs/algorithm.md``, "When masking is free").
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from benchmarks.common import (
    apply_config_arg, batch_gradient, collect_batch, fold_into_keep_probs, machine, machine_line, make_learner,
    masked_gradient, start_on_batch, table, warm_start_of, write_outputs,
)
from pcm_core.config import RunConfig, load_config
from pcm_core.plots import pyplot

VARIANTS: dict[str, tuple[str, int]] = {"pcm@4": ("pcm", 4), "pcm@12": ("pcm", 12), "pcm@24": ("pcm", 24),
                                        "uniform@12": ("uniform", 12)}
"""Variant name -> (sampler, budget B); the ``all`` sampler (GRPO) is always measured."""


def settings(quick: bool, args: argparse.Namespace | None = None) -> dict[str, Any]:
    """Batch shape, batch and mask counts, variants. With ``--config`` the batch shape is the
    config's own (``train.tasks_per_step`` x ``train.group_size``) in full mode (quick mode keeps
    its small 2 x 4) unless ``--groups`` and ``--group-size`` say otherwise; ``--budgets``
    replaces the variants by ``pcm`` at those B."""
    s: dict[str, Any] = {"config": None, "groups": 2 if quick else 8, "group_size": 4 if quick else 8,
                         "batches": 3 if quick else 8, "masks": 2 if quick else 3, "history_batches": 1 if quick else 2,
                         "max_steps": None, "seed": 0, "warm_start": not quick, "variants": dict(VARIANTS)}
    if args is not None:
        apply_config_arg(s, args, quick)
        for key in ("groups", "group_size", "max_steps"):
            if getattr(args, key, None):
                s[key] = getattr(args, key)
        if getattr(args, "repeats", None):
            s["masks"] = max(2, args.repeats)
        if getattr(args, "budgets", None):
            s["variants"] = {f"pcm@{b}": ("pcm", int(b)) for b in args.budgets.split(",")}
        if getattr(args, "tiny", False):
            s.update(groups=1, group_size=2, batches=2, masks=2, history_batches=1, max_steps=64,
                     variants={"pcm@4": ("pcm", 4)})
    return s


def variant_config(s: dict[str, Any], sampler: str, budget: int) -> RunConfig:
    """The measured config (``--config`` or the embedded default) with this batch shape and selection."""
    overrides = [f"pcm.sampler={sampler}", f"pcm.budget={budget}", "tracking.enabled=false",
                 f"train.tasks_per_step={s['groups']}", f"train.group_size={s['group_size']}",
                 *([f"env.options.max_steps={s['max_steps']}"] if s["max_steps"] else [])]
    return load_config(s["config"], overrides)


def noise_split(grads: Tensor) -> dict[str, float]:
    """Mask and batch variance of gradients ``[K, R, P]`` (K batches, R masks each, R = 1: no mask noise).

    Returns ``mask_variance`` ``E||g_br - g_b||^2``, ``batch_variance`` ``Var_b(g_b)`` with the mask
    noise of the ``R``-mask means removed, ``signal2`` ``||E g||^2`` (unbiased: ``||mean||^2`` minus the
    variance of the mean), ``effective_batch_fraction`` and ``signal_to_noise`` (both in float).
    """
    batches, masks = grads.shape[:2]
    if batches < 2:
        raise ValueError(f"noise_split needs at least 2 batches, got {batches}")
    per_batch = grads.mean(1)  # g_b  [K, P]
    mask = float((grads - per_batch[:, None]).pow(2).sum(-1).sum()) / (batches * (masks - 1)) if masks > 1 else 0.0
    spread = float((per_batch - per_batch.mean(0)).pow(2).sum(-1).sum()) / (batches - 1)  # Var_b of the R-mask means
    batch = spread - mask / masks
    total = batch + mask  # the variance of one update, one batch and one mask
    signal2 = float(per_batch.mean(0).pow(2).sum()) - spread / batches
    return {"mask_variance": mask, "batch_variance": batch, "signal2": signal2,
            "effective_batch_fraction": batch / total if total > 0 else 1.0,
            "signal_to_noise": signal2 / total if total > 0 else float("inf")}


def run(quick: bool, device: str, out: Path, args: argparse.Namespace | None = None, log=print) -> dict[str, Any]:
    s = settings(quick, args)
    started = time.perf_counter()
    base = variant_config(s, "all", 12)
    dev, env, policy = start_on_batch(s, device, base)
    warm = warm_start_of(policy, env, base, log) if s["warm_start"] else None
    real_outcomes = warm is not None  # an untrained policy never succeeds: its outcomes are relabelled 1, 0, 1, 0
    batches, notes = [], []
    for b in range(s["history_batches"] + s["batches"]):
        batch, note = collect_batch(policy, env, s["groups"], s["group_size"], s["seed"] + 1 + b, ensure_mixed=not real_outcomes)
        batches.append(batch)
        notes.append(note)
    env.close()
    history, targets = batches[: s["history_batches"]], batches[s["history_batches"] :]
    log(f"batches: success {[round(sum(n['rewards']) / len(n['rewards']), 2) for n in notes]}")
    chunks = sum(int(b.lengths.sum()) for b in targets)

    full = make_learner(policy, base)
    grads = torch.stack([batch_gradient(full, full.select(b).batch) for b in targets])[:, None]  # [K, 1, P]
    results: dict[str, Any] = {"all": {"sampler": "all", "budget": None, "kept_fraction": 1.0, **noise_split(grads)}}
    log(f"  all          snr {results['all']['signal_to_noise']:.3f}")
    for name, (sampler, budget) in s["variants"].items():
        learner = make_learner(policy, variant_config(s, sampler, budget))
        state = fold_into_keep_probs(learner, history)
        per_batch, kept = [], 0
        for b, batch in enumerate(targets):
            masks = []
            for r in range(s["masks"]):
                selected, grad = masked_gradient(learner, batch, state, seed=1000 * b + r)
                kept += int(selected.selection.keep.sum())
                masks.append(grad)
            per_batch.append(torch.stack(masks))
        results[name] = {"sampler": sampler, "budget": budget, "kept_fraction": kept / (chunks * s["masks"]),
                         **noise_split(torch.stack(per_batch))}
        log(f"  {name:12s} kept {results[name]['kept_fraction']:.3f} effective "
            f"{results[name]['effective_batch_fraction']:.3f} snr {results[name]['signal_to_noise']:.3f}")
    add_grpo_fractions(results)
    result = {
        "benchmark": "gradient_noise", "machine": machine(), "device": str(dev), "settings": s, "warm_start": warm,
        "batches": notes, "variants": results,
        "effective_batch_fraction_at_b12": results.get("pcm@12", {}).get("effective_batch_fraction"),
        "duration_s": time.perf_counter() - started,
    }
    write_outputs(out, "gradient_noise", result, markdown(result), figure(result))
    return result


def add_grpo_fractions(variants: dict[str, dict[str, Any]]) -> None:
    """Set ``grpo_fraction`` of every variant: GRPO's total update variance over the variant's."""
    grpo = variants["all"]["batch_variance"] + variants["all"]["mask_variance"]
    for v in variants.values():
        total = v["batch_variance"] + v["mask_variance"]
        v["grpo_fraction"] = grpo / total if total > 0 else 1.0


def steps_ratio(effective_batch_fraction: float) -> float:
    """RL steps PCM needs per GRPO step to the same progress, with Adam in the noise-dominated regime.

    Adam divides each coordinate by the gradient's noise, so an update's progress along the signal
    scales with ``signal / noise``; an update as noisy as GRPO's on a fraction ``f`` of the
    trajectories has ``sqrt(f)`` of GRPO's, and needs ``1 / sqrt(f)`` times the steps.
    """
    return 1.0 / math.sqrt(effective_batch_fraction) if effective_batch_fraction > 0 else float("inf")


def markdown(result: dict[str, Any]) -> str:
    s, m = result["settings"], result["machine"]
    rows = [[name, f"{v['kept_fraction']:.3f}", f"{v['mask_variance'] / v['batch_variance']:.2f}" if v["batch_variance"] > 0
             else "n/a", f"{v['effective_batch_fraction']:.3f}", f"{steps_ratio(v['effective_batch_fraction']):.2f}",
             f"{v['grpo_fraction']:.3f}", f"{steps_ratio(v['grpo_fraction']):.2f}"]
            for name, v in result["variants"].items()]
    return "\n".join([
        "# gradient_noise: the rollout batch's noise and PCM's mask noise",
        "",
        f"{machine_line(m, result['device'])} Config: {s['config'] or 'the embedded default'}; "
        f"{s['batches']} independent batches of {s['groups']}x{s['group_size']} trajectories; {s['masks']} masks per "
        f"batch and variant; {s['history_batches']} history batch(es) folded into q; warm start: "
        f"{result['warm_start'] or 'none (random init, relabelled outcomes)'}.",
        "",
        table(["variant", "kept chunk fraction", "mask / batch variance", "effective batch fraction f",
               "steps vs GRPO, 1 / sqrt(f)", "GRPO-relative fraction f_grpo", "steps vs GRPO, 1 / sqrt(f_grpo)"], rows),
        "",
        "Effective batch fraction f = batch / (batch + mask) variance, the variant's own units: a full GRPO update on "
        "this share of the trajectories would be as noisy. f equal to the kept fraction: the chunks of a trajectory "
        "carry independent information; f near 1: dropping them is free. f_grpo = GRPO's total update variance over "
        "the variant's: it also counts the larger batch-to-batch variance of a weighting that concentrates on fewer "
        "chunks, which f leaves out, and assumes both updates carry signals of the same size. Steps vs GRPO = 1 / sqrt(fraction), the RL steps "
        "an update this noisy needs per GRPO step when the noise dominates the gradient, as it does here: GRPO's own "
        f"update has a signal to noise ||E g||^2 / Var(g) of {result['variants']['all']['signal_to_noise']:.3f}. With "
        "a signal-dominated gradient (far larger batches) the ratio tends to 1.",
    ])


def figure(result: dict[str, Any]):
    plt = pyplot()
    names = list(result["variants"])
    kept = [result["variants"][n]["kept_fraction"] for n in names]
    effective = [result["variants"][n]["effective_batch_fraction"] for n in names]
    grpo = [result["variants"][n]["grpo_fraction"] for n in names]
    fig, ax = plt.subplots(figsize=(8, 4))
    x = range(len(names))
    ax.bar([i - 0.27 for i in x], kept, width=0.27, label="kept chunk fraction")
    ax.bar(list(x), effective, width=0.27, label="effective batch fraction f (own units)")
    ax.bar([i + 0.27 for i in x], grpo, width=0.27, label="f_grpo (GRPO's units)")
    ax.set_xticks(list(x), names)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("fraction")
    ax.legend()
    ax.set_title("How much of the rollout batch's information each update keeps")
    return fig
