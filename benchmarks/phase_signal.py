"""``phase_signal``: the per-phase credit report. Which phases of an episode carry the policy
gradient's signal, and which only its noise?

``K`` independent rollout batches of the size ``pcm-run`` trains on (8 groups x 8 trajectories)
from the cached SFT warm start of the embedded default (``configs/quickstart.yaml``; ``--config
FILE`` measures any ``pcm-run`` config instead: its env, policy, segmenter, proxy, loss and batch
shape). Each batch's chunks are split into phases twice: by the env's own labels (the ``env``
segmenter, ``batch.info["phase"]``) and by the configured segmenter (``pcm.segmenter``, default
``gripper``). Per phase ``k``:

- chunk share: the fraction of the real chunks in phase ``k``;
- entropy: the mean action-token entropy of those chunks at sampling time (``batch.entropy``);
- proxy score ``v_k``: the configured variance proxy's score, averaged over the batches;
- signal and noise: with ``g_b^k`` the full GRPO gradient of batch ``b`` (every chunk, the
  config's loss aggregation) restricted to the chunks of phase ``k`` (every other chunk weighted
  0), the signal is ``||E g^k||^2``, estimated without bias from the ``K`` batches as
  ``||mean_b g_b^k||^2 - trace(Cov_b) / K``, and the noise is ``trace(Cov_b) = sum_j Var_b(g_b^k[j])``,
  the variance of one batch's phase gradient. Reported as each phase's share of the sums over
  phases, and as signal / noise per phase.

The phase gradients add up to the full gradient exactly (checked: ``decomposition_error``); their
signals and noises need not add up to the full gradient's, which have cross terms between phases.

- push: ``sum_c A_c w_c L`` over the phase's chunks in the update (``A_c`` the chunk's advantage,
  ``w_c L`` its loss weight), the first-order direction of the update on that phase: positive,
  the update raises the log-probabilities of the phase's sampled actions (sharpening it); negative,
  it lowers them (spreading it). Mean over the batches, for GRPO (every chunk) and for the
  config's PCM sampler with each estimator (``masked``, ``iw``, ``stratified``), those averaged over
  mask draws. Under ``seq_mean`` GRPO's pushes sum to 0 over the phases (a group's advantages do).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from benchmarks.common import (
    QUICK_TRAINING, apply_config_arg, batch_gradient, collect_batch, fold_into_keep_probs, machine, machine_line,
    make_learner, start_on_batch, table, warm_start_of, write_outputs,
)
from pcm_core.algo.pcm import compact
from pcm_core.config import RunConfig, load_config
from pcm_core.interfaces import PhaseSegmenter
from pcm_core.learner import Learner, SelectionResult
from pcm_core.plots import pyplot
from pcm_core.runner import named_by_env
from pcm_core.types import CompactBatch, RolloutBatch, Selection
from pcm_phases.segmenters import EnvSegmenter, GripperSegmenter


def settings(quick: bool, args: argparse.Namespace | None = None) -> dict[str, Any]:
    """Config, batch shape, batch count and overrides. With ``--config`` the batch shape is the
    config's own (``train.tasks_per_step`` x ``train.group_size``) in full mode; quick and tiny
    modes keep theirs, warm-start in a throw-away cache with fewer demos and relabel the outcomes
    of a batch without a mixed group (their small warm starts rarely succeed)."""
    s: dict[str, Any] = {"config": None, "groups": 2 if quick else 8, "group_size": 4 if quick else 8,
                         "batches": 3 if quick else 8, "mask_draws": 2 if quick else 16, "seed": 0,
                         "throwaway_cache": quick, "relabel": quick,
                         "overrides": list(QUICK_TRAINING[1:3]) if quick else []}
    if args is not None:
        apply_config_arg(s, args, quick)
        if getattr(args, "tiny", False):
            s.update(groups=1, group_size=2, batches=2, throwaway_cache=True, relabel=True,
                     overrides=["env.options.max_steps=128", "train.sft.demos=4", "train.sft.epochs=1"])
    return s


def measured_config(s: dict[str, Any], cache_dir: str | None, sampler: str | None = "all") -> RunConfig:
    """The measured config with GRPO's ``all`` sampler (None: the config's own sampler), this batch
    shape and, given, the warm-start cache."""
    grpo = ["pcm.sampler=all", "pcm.sampler_options={}"] if sampler == "all" else []
    overrides = [*s["overrides"], *grpo, "tracking.enabled=false", f"train.tasks_per_step={s['groups']}",
                 f"train.group_size={s['group_size']}", *([f"train.sft.cache_dir={cache_dir}"] if cache_dir else [])]
    return load_config(s["config"], overrides)


ESTIMATORS = ("masked", "iw", "stratified")


def pcm_draws(policy, config: RunConfig, batches: list[RolloutBatch], draws: int) -> dict[str, list[list[SelectionResult]]]:
    """For each estimator, ``draws`` masks of every batch from the config's PCM sampler, the
    keep-probabilities folded in from the batches first (as training before would have): estimator
    -> per batch, its draws."""
    found: dict[str, list[list[SelectionResult]]] = {}
    for estimator in ESTIMATORS:
        learner = make_learner(policy, config.model_copy(update={"pcm": config.pcm.model_copy(update={"estimator": estimator})}))
        learner.generator.manual_seed(0)
        keep_state = fold_into_keep_probs(learner, batches)
        per_batch = []
        for batch in batches:
            learner.keep_probs.load_state_dict(keep_state)
            first = learner.select(batch)
            per_batch.append([first] + [learner.resample(batch, first) for _ in range(draws - 1)])
        found[estimator] = per_batch
    return found


def phase_push(draws_per_batch: list[list[SelectionResult]], phases: list[Tensor], num_phases: int) -> list[float]:
    """``[P_k]`` push of each phase, ``sum_c A_c w_c L`` over its chunks in the update, mean over the
    draws of a batch and over the batches (``phases``: each batch's phase ids ``[N, T]``)."""
    total = torch.zeros(num_phases, dtype=torch.float64)
    for draws, ids in zip(draws_per_batch, phases):
        for selected in draws:
            update = selected.batch
            mass = update.advantages.double() * update.weights * update.tokens.shape[-1]  # A_c w_c L  [C]
            total.index_add_(0, ids[update.trajectory, update.chunk], mass / len(draws))
    return (total / len(draws_per_batch)).tolist()


def phase_segmenters(config: RunConfig, learner: Learner, env_phase_names: tuple[str, ...] | None) -> dict[str, PhaseSegmenter]:
    """``env`` (the env's labels, with the names the env gives them), ``gripper`` (the segmenter
    that needs no labels, for comparison) and the configured segmenter, by name."""
    options = EnvSegmenter.Options.model_validate(config.pcm.segmenter_options if config.pcm.segmenter == "env" else {})
    found: dict[str, PhaseSegmenter] = {"env": named_by_env(EnvSegmenter(options), env_phase_names),
                                        "gripper": GripperSegmenter(GripperSegmenter.Options())}
    if config.pcm.segmenter != "env":
        found[config.pcm.segmenter] = learner.segmenter
    return found


def phase_batch(batch: RolloutBatch, selected: SelectionResult, in_phase: Tensor) -> CompactBatch:
    """The full update ``selected.batch`` with the weight of every chunk outside ``in_phase``
    ``[N, T]`` (bool) set to 0, those chunks left out: they would add exactly 0 to the gradient,
    and packed into the phase's few micro-batches they would only cost memory and time."""
    full = selected.batch
    keep = torch.zeros_like(in_phase)  # the chunks of the full update  [N, T]
    keep[full.trajectory, full.chunk] = True
    weight = torch.zeros(in_phase.shape, dtype=full.weights.dtype)  # their weights  [N, T]
    weight[full.trajectory, full.chunk] = full.weights
    keep &= in_phase
    return compact(batch, Selection(keep, keep.double()), selected.advantages, weight[keep])


def signal_and_noise(grads: Tensor) -> dict[str, float]:
    """Of gradients ``[K, P]`` (K batches, P parameters): ``noise`` ``trace(Cov_b) = sum_j Var_b(g_b[j])`` (unbiased,
    over ``K - 1``) and ``signal`` ``||E g||^2`` without bias, ``||mean_b g_b||^2 - noise / K``."""
    batches = grads.shape[0]
    if batches < 2:
        raise ValueError(f"signal_and_noise needs at least 2 batches, got {batches}")
    mean = grads.mean(0)  # [P]
    noise = float((grads - mean).pow(2).sum()) / (batches - 1)
    return {"signal": float(mean.pow(2).sum()) - noise / batches, "noise": noise}


def shares(values: list[float]) -> list[float]:
    """Each value over their sum (NaN when the sum is 0)."""
    total = sum(values)
    return [v / total if total != 0 else math.nan for v in values]


def ratio(a: float, b: float) -> float:
    """``a / b``, NaN when ``b`` is 0 (an empty phase has no signal to noise)."""
    return a / b if b != 0 else math.nan


def chunk_statistics(batches: list[RolloutBatch], phases: list[Tensor], num_phases: int) -> tuple[Tensor, Tensor]:
    """Real chunks ``[P_k]`` and their mean action-token entropy ``[P_k]`` (NaN for an empty phase)
    per phase, over ``batches`` with their phase ids ``phases`` (each ``[N, T]``)."""
    chunks = torch.zeros(num_phases, dtype=torch.float64)
    entropy = torch.zeros(num_phases, dtype=torch.float64)
    for batch, ids in zip(batches, phases):
        onehot = torch.nn.functional.one_hot(ids[batch.chunk_mask], num_phases).double()  # real chunks  [C, P_k]
        chunks += onehot.sum(0)
        entropy += batch.entropy[batch.chunk_mask].double() @ onehot
    return chunks, torch.where(chunks > 0, entropy / chunks.clamp(min=1), math.nan)


def phase_report(learner: Learner, segmenter: PhaseSegmenter, batches: list[RolloutBatch],
                 selections: list[SelectionResult], full_grads: Tensor,
                 masks: dict[str, list[list[SelectionResult]]]) -> dict[str, Any]:
    """Per phase of ``segmenter``: chunk share, entropy, proxy score, signal, noise and push (module
    docstring), from ``batches`` with their full-update selections, full gradients ``full_grads``
    ``[K, P]`` and the PCM ``masks`` of each estimator (:func:`pcm_draws`)."""
    num_phases = segmenter.num_phases
    phases = [segmenter.segment(batch).clamp(0, num_phases - 1) for batch in batches]  # each [N, T]
    chunks, entropy = chunk_statistics(batches, phases, num_phases)
    score = torch.stack([learner.proxy.score(b, ids, num_phases).value.double()
                         for b, ids in zip(batches, phases)]).mean(0)  # v_k, mean over batches  [P_k]
    split, summed = [], torch.zeros_like(full_grads)
    for k in range(num_phases):
        grads = torch.stack([batch_gradient(learner, phase_batch(batch, selected, ids == k))
                             for batch, selected, ids in zip(batches, selections, phases)])  # g_b^k  [K, P]
        summed += grads
        split.append(signal_and_noise(grads))
    full = signal_and_noise(full_grads)
    residual = (summed - full_grads).norm(dim=1) / full_grads.norm(dim=1).clamp(min=1e-300)  # [K]
    signal_share, noise_share = shares([p["signal"] for p in split]), shares([p["noise"] for p in split])
    chunk_share = (chunks / chunks.sum()).tolist()
    pushes = {"grpo": phase_push([[selected] for selected in selections], phases, num_phases),
              **{f"pcm {estimator}": phase_push(draws, phases, num_phases) for estimator, draws in masks.items()}}
    phases_out = [{"phase": k, "name": name, "chunks": int(chunks[k]), "chunk_share": chunk_share[k],
                   "entropy": float(entropy[k]), "proxy_score": float(score[k]), **split[k],
                   "signal_share": signal_share[k], "noise_share": noise_share[k],
                   "signal_to_noise": ratio(split[k]["signal"], split[k]["noise"]),
                   "push": {variant: values[k] for variant, values in pushes.items()}}
                  for k, name in enumerate(segmenter.phase_names)]
    return {"num_phases": num_phases, "phases": phases_out,
            "full": {**full, "signal_to_noise": ratio(full["signal"], full["noise"])},
            "phase_signals_over_full": ratio(sum(p["signal"] for p in split), full["signal"]),
            "phase_noises_over_full": ratio(sum(p["noise"] for p in split), full["noise"]),
            "decomposition_error": float(residual.max())}


def run(quick: bool, device: str, out: Path, args: argparse.Namespace | None = None, log=print) -> dict[str, Any]:
    s = settings(quick, args)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:  # a quick or tiny warm start never mixes with real ones
        config = measured_config(s, str(Path(tmp) / "cache") if s["throwaway_cache"] else None)
        dev, env, policy = start_on_batch(s, device, config)
        warm = warm_start_of(policy, env, config, log)
        env_phase_names = env.phase_names
        relabel = s["relabel"] or warm is None  # without a mixed group every advantage, so every gradient, is 0
        collected = [collect_batch(policy, env, s["groups"], s["group_size"], s["seed"] + 1 + b, ensure_mixed=relabel)
                     for b in range(s["batches"])]
        env.close()
    batches, notes = [b for b, _ in collected], [n for _, n in collected]
    log(f"batches: success {[round(sum(n['rewards']) / len(n['rewards']), 2) for n in notes]}, "
        f"relabelled {sum(n['relabelled'] for n in notes)} of {len(notes)}")
    learner = make_learner(policy, config)
    selections = [learner.select(b) for b in batches]
    pcm_config = measured_config(s, None, sampler=None).model_copy(update={"train": config.train})
    masks = pcm_draws(policy, pcm_config, batches, s["mask_draws"])
    full_grads = torch.stack([batch_gradient(learner, selected.batch) for selected in selections])  # [K, P]
    segmenters = phase_segmenters(config, learner, env_phase_names)
    if "phase" not in batches[0].info:
        log(f"env {config.env.name} reports no phase labels: the env segmenter is left out")
        del segmenters["env"]
    reports = {}
    for name, segmenter in segmenters.items():
        reports[name] = phase_report(learner, segmenter, batches, selections, full_grads, masks)
        log(f"  {name:8s} " + ", ".join(f"{p['name']}: chunks {p['chunk_share']:.2f} signal {p['signal_share']:.2f} "
                                       f"noise {p['noise_share']:.2f}" for p in reports[name]["phases"]))
    result = {"benchmark": "phase_signal", "machine": machine(), "device": str(dev), "settings": s, "warm_start": warm,
              "env": config.env.name, "proxy": config.pcm.proxy, "loss_aggregation": config.train.loss_aggregation,
              "pcm": {"sampler": pcm_config.pcm.sampler, "sampler_options": pcm_config.pcm.sampler_options,
                      "budget": pcm_config.pcm.budget, "budget_scaling": pcm_config.pcm.budget_scaling},
              "batches": notes, "segmenters": reports, "duration_s": time.perf_counter() - started}
    write_outputs(out, "phase_signal", result, markdown(result), figure(result))
    return result


def fmt(value: float | None, digits: int = 3) -> str:
    """``value`` to ``digits`` decimals, ``n/a`` when it is missing or not finite."""
    return f"{value:.{digits}f}" if value is not None and math.isfinite(value) else "n/a"


def segmenter_table(report: dict[str, Any]) -> str:
    """One row per named phase, then the full gradient's signal and noise."""
    rows = [[p["name"], fmt(p["chunk_share"]), fmt(p["entropy"]), f"{p['proxy_score']:.3g}", fmt(p["signal_share"]),
             fmt(p["noise_share"]), fmt(p["signal_to_noise"])] for p in report["phases"]]
    full = report["full"]
    rows.append(["full gradient", "1.000", "", "", f"signal {full['signal']:.3g}", f"noise {full['noise']:.3g}",
                 fmt(full["signal_to_noise"])])
    return table(["phase", "chunk share", "entropy", "proxy score v_k", "signal share", "noise share",
                  "signal / noise"], rows)


def push_table(report: dict[str, Any]) -> str:
    """One row per named phase: its push under GRPO and under PCM with each estimator."""
    variants = list(report["phases"][0]["push"])
    rows = [[p["name"], *(f"{p['push'][v]:+.4f}" for v in variants)] for p in report["phases"]]
    return table(["phase", *variants], rows)


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    relabelled = sum(n["relabelled"] for n in result["batches"])
    lines = [
        "# phase_signal: which phases carry the gradient's signal",
        "",
        f"{machine_line(result['machine'], result['device'])} Config: {s['config'] or 'the embedded default'} "
        f"(env {result['env']}, proxy {result['proxy']}, loss {result['loss_aggregation']}); {s['batches']} independent "
        f"batches of {s['groups']}x{s['group_size']} trajectories; warm start: "
        f"{result['warm_start'] or 'none (random init)'}{' (a throw-away cache)' if s['throwaway_cache'] else ''}; "
        f"outcomes relabelled 1, 0, 1, 0 in {relabelled} of {len(result['batches'])} batches (no group with mixed "
        "outcomes).",
    ]
    for name, report in result["segmenters"].items():
        signals = sum(p["signal"] for p in report["phases"])
        unresolved = (f" **The per-phase signals sum to {signals:.3g}, not above 0: {s['batches']} batches do not "
                      "resolve the signal, and its shares say nothing.**" if signals <= 0 else "")
        lines += ["", f"## segmenter `{name}` ({report['num_phases']} phases)", "", segmenter_table(report), "",
                  f"Sum over phases of the signals / the full gradient's: {fmt(report['phase_signals_over_full'], 2)}; "
                  f"of the noises: {fmt(report['phase_noises_over_full'], 2)}; the phase gradients add up to the full "
                  f"one to a relative error of {report['decomposition_error']:.1e}.{unresolved}", "",
                  "Push of each phase, sum_c A_c w_c L over its chunks in the update (positive: the update raises its "
                  "sampled actions' log-probabilities):", "", push_table(report)]
    lines += [
        "",
        "g_b^k is the full GRPO gradient of batch b restricted to the chunks of phase k (every other chunk weighted "
        "0). Signal = ||E g^k||^2, estimated without bias as ||mean_b g_b^k||^2 - trace(Cov_b) / K (it can come out "
        "negative when K batches cannot tell it from 0); noise = trace(Cov_b) = sum_j Var_b(g_b^k[j]), the variance "
        "of one batch's phase gradient. Signal and noise shares are shares of the sums over phases: the per-phase "
        "signals need not add up to the full gradient's signal, nor the noises to its noise, because of the cross "
        "terms between phases (2 <E g^j, E g^k> and the covariances). Chunk share: of the real chunks; entropy: the "
        "mean action-token entropy of the phase's chunks at sampling time; v_k: the proxy's score, mean over "
        "batches. `env` phases are the env's labels (docs/tabletop.md, \"Phase labels\"); `gripper` phases are "
        "named by the open/close toggles of the executed gripper command before the chunk, the last merging the rest.",
        "",
        f"Push: mean over the batches; PCM's ({pcm_text(result['pcm'])}) over {s['mask_draws']} masks of each batch "
        "too, the keep-probabilities folded in from all batches first. A phase that GRPO pushes up and PCM pushes "
        "down (or far less up) has its sampled actions spread by PCM where GRPO sharpens them: the estimator then "
        "weighs that phase's kept chunks differently from what they stand for.",
    ]
    return "\n".join(lines)


def pcm_text(pcm: dict[str, Any]) -> str:
    """``sampler pcm (allocation per_phase), B = 12, fixed`` from the result's ``pcm`` block."""
    options = ", ".join(f"{k} {v}" for k, v in pcm["sampler_options"].items())
    return f"sampler {pcm['sampler']}{f' ({options})' if options else ''}, B = {pcm['budget']}, {pcm['budget_scaling']}"


def figure(result: dict[str, Any]):
    plt = pyplot()
    reports = result["segmenters"]
    fig, axes = plt.subplots(2, len(reports), figsize=(6 * len(reports), 9), squeeze=False)
    for ax, push_ax, (name, report) in zip(axes[0], axes[1], reports.items()):
        phases = report["phases"]
        x = list(range(len(phases)))
        for offset, key, label in ((-0.27, "chunk_share", "chunk share"), (0.0, "signal_share", "signal share"),
                                   (0.27, "noise_share", "noise share")):
            ax.bar([i + offset for i in x], [p[key] for p in phases], width=0.27, label=label)
        ax.axhline(0, color="black", linewidth=0.5)
        ax.set_xticks(x, [p["name"] for p in phases], rotation=20)
        ax.set_ylabel("share over phases")
        ax.set_title(f"segmenter {name}")
        right = ax.twinx()
        right.plot(x, [p["entropy"] for p in phases], "ko--", label="entropy")
        right.set_ylim(bottom=0)
        right.set_ylabel("mean action-token entropy")
        handles, labels = ax.get_legend_handles_labels()
        more, more_labels = right.get_legend_handles_labels()
        ax.legend(handles + more, labels + more_labels, fontsize=8)
        variants = list(phases[0]["push"])
        width = 0.8 / len(variants)
        for j, variant in enumerate(variants):
            push_ax.bar([i + (j - (len(variants) - 1) / 2) * width for i in x], [p["push"][variant] for p in phases],
                        width=width, label=variant)
        push_ax.axhline(0, color="black", linewidth=0.5)
        push_ax.set_xticks(x, [p["name"] for p in phases], rotation=20)
        push_ax.set_ylabel("push: sum of A w L over the phase's chunks")
        push_ax.set_title(f"segmenter {name}: where the update pushes")
        push_ax.legend(fontsize=8)
    fig.suptitle("Per-phase share of the chunks, of the gradient's signal and of its noise; the push of each update")
    fig.tight_layout()
    return fig
