"""``long_runs``: does a long ``pcm-run`` hold what it learned? Reads the evaluation history of
finished run folders (``<run>/checkpoints/latest`` -> ``state.json``) and reports, per run, the
warm start, the best evaluation, the last one, and the largest fall below the best so far, both of
single evaluations and of the mean of :data:`WINDOW` consecutive ones (a single 192-episode
evaluation has a standard error of about 3 points, so single-evaluation falls of 5-10 points are
mostly noise; a fall of the moving mean is not). Beside each run's falls stand the falls a policy
that never gets worse would show from evaluation noise alone (:func:`noise_falls`): the yardstick
for a "never falls more than X points" line.

    python -m benchmarks.long_runs 0=runs/<seed 0 run> 1=runs/<seed 1 run> --out DIR [--command "pcm-run ..."]

A ``long_runs.json`` in place of a run folder re-summarises that seed's stored curves.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import machine, table, write_outputs
from pcm_core.plots import pyplot

WINDOW = 3
"""Consecutive evaluations averaged for the moving-mean fall."""

LINE_POINTS = 5.0
"""The fall a run is held to (points below its best so far)."""

NOISE_DRAWS = 20000
"""Simulated evaluation histories per run for the noise-alone falls."""


def largest_fall(values: list[float]) -> float:
    """The largest ``best so far - value`` over the sequence (0 for a sequence that never falls)."""
    best, fall = float("-inf"), 0.0
    for value in values:
        best = max(best, value)
        fall = max(fall, best - value)
    return fall


def moving_mean(values: list[float], window: int = WINDOW) -> list[float]:
    """Means of each ``window`` consecutive values (``len(values) - window + 1`` of them)."""
    return [sum(values[i : i + window]) / window for i in range(len(values) - window + 1)]


def never_falling(values: list[float], window: int = WINDOW) -> list[float]:
    """A curve like the run's that never gets worse: the running best of its centred moving mean
    (the ends take the nearest full window), one value per evaluation."""
    means = moving_mean(values, window)
    centred = [means[min(max(i - window // 2, 0), len(means) - 1)] for i in range(len(values))]
    return [max(centred[: i + 1]) for i in range(len(centred))]


def noise_falls(curve: list[float], episodes: int, draws: int = NOISE_DRAWS, seed: int = 0) -> dict[str, float]:
    """Falls from evaluation noise alone: each evaluation of a policy whose true success is
    ``curve`` (``[E]``) drawn as ``Binomial(episodes, curve_e) / episodes``, ``draws`` times.

    Returns the mean largest fall (points) of single evaluations and of the moving mean, and the
    share of draws in which each stays within :data:`LINE_POINTS`.
    """
    rng = np.random.default_rng(seed)
    evals = rng.binomial(episodes, np.asarray(curve), size=(draws, len(curve))) / episodes  # [draws, E]
    means = np.stack([evals[:, i : i + WINDOW].mean(1) for i in range(len(curve) - WINDOW + 1)], axis=1)

    def falls(x: np.ndarray) -> np.ndarray:  # [draws, E'] -> [draws] points
        return 100 * (np.maximum.accumulate(x, axis=1) - x).max(axis=1)

    single, moving = falls(evals), falls(means)
    return {
        "fall_points": float(single.mean()), "moving_mean_fall_points": float(moving.mean()),
        "within_line": float((single <= LINE_POINTS).mean()), "moving_mean_within_line": float((moving <= LINE_POINTS).mean()),
    }


def history(run: Path, seed: str) -> list[dict[str, Any]]:
    """The ``history`` of the run's latest checkpoint, or, for a ``long_runs.json``, the rows of
    ``seed``'s stored evaluation and entropy curves."""
    if run.suffix == ".json":
        stored = json.loads(run.read_text())["runs"][seed]
        return [{"step": s, "eval_success_rate": v} for s, v in stored["eval"]] + [
            {"step": s, "entropy": v} for s, v in stored["entropy"]]
    checkpoints = run / "checkpoints"
    step = (checkpoints / "latest").read_text().strip()
    return json.loads((checkpoints / step / "state.json").read_text())["history"]


def summarise(rows: list[dict[str, Any]], episodes: int) -> dict[str, Any]:
    """One run's curves and figures from its history rows (``episodes`` per evaluation)."""
    evals = [(int(r.get("step", 0)), float(r["eval_success_rate"])) for r in rows if "eval_success_rate" in r]
    if len(evals) < WINDOW:
        raise ValueError(f"a long run needs at least {WINDOW} evaluations, this one has {len(evals)}")
    values = [v for _, v in evals]
    best_step, best = max(evals, key=lambda e: (e[1], -e[0]))
    return {
        "eval": evals,
        "entropy": [(int(r["step"]), float(r["entropy"])) for r in rows if r.get("step", 0) > 0 and "entropy" in r],
        "warm_start": values[0], "best": best, "best_step": best_step, "final": values[-1],
        "largest_fall_points": 100 * largest_fall(values),
        "largest_moving_mean_fall_points": 100 * largest_fall(moving_mean(values)),
        "noise_only": noise_falls(never_falling(values), episodes),
    }


def markdown(result: dict[str, Any]) -> str:
    rows = [(seed, f"{r['warm_start']:.3f}", f"{r['best']:.3f} (step {r['best_step']})", f"{r['final']:.3f}",
             f"{r['largest_fall_points']:.1f}", f"{r['largest_moving_mean_fall_points']:.1f}",
             f"{r['noise_only']['fall_points']:.1f} ({r['noise_only']['within_line']:.0%})",
             f"{r['noise_only']['moving_mean_fall_points']:.1f} ({r['noise_only']['moving_mean_within_line']:.0%})")
            for seed, r in result["runs"].items()]
    return "\n".join([
        "# long_runs: the evaluation curve of long `pcm-run` runs", "",
        f"`{result['command']}`; eval success on {result['episodes']} fixed initial states at every evaluation.", "",
        table(["seed", "warm start", "best evaluation", "last evaluation", "largest fall below the best so far (points)",
               f"same, mean of {WINDOW} consecutive evaluations (points)",
               f"noise alone: single fall (share within {LINE_POINTS:g})", f"noise alone: mean-of-{WINDOW} fall (share within {LINE_POINTS:g})"],
              rows),
        "",
        f"*Noise alone*: the falls a policy that never gets worse would show, its true success the running best of the "
        f"run's centred {WINDOW}-evaluation mean, each evaluation a binomial draw of {result['episodes']} episodes "
        f"(mean over {NOISE_DRAWS} draws, and the share of draws that stay within {LINE_POINTS:g} points of the best so far).",
    ])


def figure(result: dict[str, Any]):
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for seed, r in result["runs"].items():
        axes[0].plot(*zip(*r["eval"]), marker=".", label=f"seed {seed}")
        axes[1].plot(*zip(*r["entropy"]), label=f"seed {seed}")
    axes[0].set_xlabel("RL step")
    axes[0].set_ylabel("eval success (192 episodes)")
    axes[1].set_xlabel("RL step")
    axes[1].set_ylabel("rollout action-token entropy")
    axes[0].legend()
    axes[1].legend()
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.long_runs", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="SEED=RUN_FOLDER")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/long_runs"))
    parser.add_argument("--episodes", type=int, default=192, help="episodes per evaluation of these runs")
    parser.add_argument("--command", default="pcm-run --set train.steps=300 --set train.eval_every=10 "
                        "--set train.eval_episodes=192 --set train.threads=1 --set train.seed=SEED")
    args = parser.parse_args(argv)
    runs = {seed: summarise(history(Path(folder), seed), args.episodes) for seed, folder in (arg.split("=", 1) for arg in args.runs)}
    result = {"benchmark": "long_runs", "command": args.command, "machine": machine(), "window": WINDOW,
              "episodes": args.episodes, "runs": runs}
    write_outputs(args.out, "long_runs", result, markdown(result), figure(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
