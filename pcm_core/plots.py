"""Run artifacts: keep-probabilities over training and the success curve."""

from __future__ import annotations

from pathlib import Path


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (imported on first use)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def keep_probability_labels(history: list[dict[str, float]], phase_names: list[str] | None) -> dict[str, str]:
    """``keep_prob/phase_<k>`` metric -> its legend label, ``phase <k>: <name>`` (``phase <k>`` unnamed), by k."""
    keys = sorted({key for row in history for key in row if key.startswith("keep_prob/phase_")}, key=lambda k: int(k.rsplit("_", 1)[1]))
    labels = {}
    for key in keys:
        k = int(key.rsplit("_", 1)[1])
        labels[key] = f"phase {k}: {phase_names[k]}" if phase_names is not None and k < len(phase_names) else f"phase {k}"
    return labels


def plot_keep_probabilities(history: list[dict[str, float]], path: Path, phase_names: list[str] | None = None) -> Path:
    """One line per phase: q_k over training steps (where PCM learned outcomes diverge); the
    legend names each phase (``phase 1: align + grasp``) when ``phase_names`` are given."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key, label in keep_probability_labels(history, phase_names).items():
        steps = [row["step"] for row in history if key in row]
        ax.plot(steps, [row[key] for row in history if key in row], label=label)
    ax.set_xlabel("training step")
    ax.set_ylabel("keep probability q_k")
    ax.set_ylim(0, 1)
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title("PCM phase keep-probabilities")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_success(history: list[dict[str, float]], path: Path) -> Path:
    """Training-rollout and evaluation success rate over steps."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    train = [(row["step"], row["success_rate"]) for row in history if "success_rate" in row]
    evals = [(row["step"], row["eval_success_rate"]) for row in history if "eval_success_rate" in row]
    if train:
        ax.plot(*zip(*train), label="training rollouts", alpha=0.6)
    if evals:
        ax.plot(*zip(*evals), marker="o", label="evaluation")
    ax.set_xlabel("training step")
    ax.set_ylabel("success rate")
    ax.set_ylim(0, 1)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
