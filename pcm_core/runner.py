"""The training run behind ``pcm-run``: build components, warm start, train, evaluate, track."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pcm_core.algo.grpo import uniform_groups
from pcm_core.config import ResolvedComponent, RunConfig
from pcm_core.interfaces import EnvBackend, PolicyBackend
from pcm_core.learner import Learner
from pcm_core.plots import plot_keep_probabilities, plot_success, write_gif
from pcm_core.profiling import StepTimer
from pcm_core.registry import get_registry
from pcm_core.rollout import GroupSpec, collect, concat
from pcm_core.tracking import Tracker
from pcm_core.types import RolloutBatch
from pcm_core.warm_start import warm_start

EVAL_INIT_OFFSET = 1_000_000
"""Evaluation initial states are ids from here on, never drawn for training."""


@dataclass
class RunResult:
    """What a finished run leaves behind."""

    run_dir: Path
    history: list[dict[str, float]] = field(default_factory=list)
    run_id: str | None = None
    tracking_uri: str | None = None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def draw_groups(rng: np.random.Generator, env: EnvBackend, count: int) -> list[GroupSpec]:
    """``count`` training groups: random task variants and fresh initial states."""
    tasks = rng.integers(0, env.num_tasks, count)
    inits = rng.integers(0, EVAL_INIT_OFFSET, count)
    return [GroupSpec(int(t), int(i)) for t, i in zip(tasks, inits)]


def collect_step(
    env: EnvBackend, policy: PolicyBackend, config: RunConfig, rng: np.random.Generator, generator: torch.Generator
) -> RolloutBatch:
    """One step's groups; with dynamic sampling, groups with equal outcomes are replaced by
    fresh ones (up to 3 extra rounds) so that every group carries a learning signal."""
    train = config.train
    batch = collect(env, policy, draw_groups(rng, env, train.tasks_per_step), train.group_size, generator)
    if not train.dynamic_sampling:
        return batch
    kept = [batch.select_trajectories(_mixed_members(batch))]
    have = int(kept[0].group_index.unique().numel()) if kept[0].num_trajectories else 0
    for _ in range(3):
        if have >= train.tasks_per_step:
            break
        extra = collect(env, policy, draw_groups(rng, env, train.tasks_per_step), train.group_size, generator)
        kept.append(extra.select_trajectories(_mixed_members(extra)))
        have += int(kept[-1].group_index.unique().numel()) if kept[-1].num_trajectories else 0
    kept = [b for b in kept if b.num_trajectories]
    if not kept:
        return batch
    merged = concat(kept)
    groups = merged.group_index.unique()[: train.tasks_per_step]
    return merged.select_trajectories(torch.nonzero(torch.isin(merged.group_index, groups)).squeeze(1))


def _mixed_members(batch: RolloutBatch) -> torch.Tensor:
    """Indices of trajectories whose group has mixed outcomes."""
    uniform = uniform_groups(batch.rewards, batch.group_index)  # [M], sorted group ids
    group_ids = batch.group_index.unique()
    mixed_ids = group_ids[~uniform]
    return torch.nonzero(torch.isin(batch.group_index, mixed_ids)).squeeze(1)


def evaluate(env: EnvBackend, policy: PolicyBackend, config: RunConfig) -> float:
    """Success rate on ``train.eval_episodes`` fixed initial states (the same at every call)."""
    episodes = config.train.eval_episodes
    generator = torch.Generator().manual_seed(config.train.seed + EVAL_INIT_OFFSET)
    successes: list[float] = []
    for start in range(0, episodes, env.num_envs):
        ids = [start + i for i in range(env.num_envs)]
        groups = [GroupSpec(i % env.num_tasks, EVAL_INIT_OFFSET + i) for i in ids]
        batch = collect(env, policy, groups, 1, generator, greedy=config.train.eval_greedy)
        successes.extend(batch.rewards.tolist()[: episodes - start])
    return float(np.mean(successes))


def build(components: dict[str, ResolvedComponent], config: RunConfig, device: torch.device) -> dict[str, Any]:
    """Instantiate every component (this is where heavy imports and model loading happen)."""
    num_envs = config.train.tasks_per_step * config.train.group_size
    return {
        "env": components["env"].build(num_envs=num_envs, seed=config.train.seed),
        "policy": components["policy"].build().to(device),
        "segmenter": components["segmenter"].build(),
        "proxy": components["proxy"].build(),
        "sampler": components["sampler"].build(),
    }


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]step"),
        MofNCompleteColumn(),
        BarColumn(),
        TextColumn("success {task.fields[success]:.2f}  eval {task.fields[eval]}  {task.fields[step_s]:.1f}s/step"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def train(config: RunConfig, components: dict[str, ResolvedComponent], console: Console | None = None) -> RunResult:
    """Run ``config`` to the end; returns the run folder and the per-step metrics."""
    console = console or Console()
    seed_everything(config.train.seed)
    device = resolve_device(config.train.device)
    run_dir = Path(config.train.output_dir) / time.strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    parts = build(components, config, device)
    env, policy = parts["env"], parts["policy"]
    hooks = get_registry().hook()
    tracker = Tracker(config.tracking)
    result = RunResult(run_dir)
    try:
        if config.train.sft.enabled and getattr(policy.options, "path", None) is None:
            warm_start(policy, env, config, log=console.print)
        learner = Learner(policy, parts["segmenter"], parts["proxy"], parts["sampler"], config.pcm, config.train)
        tracker.start(config.model_dump(mode="json"))
        result.run_id, result.tracking_uri = tracker.run_id, tracker.uri
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
        hooks.pcm_on_run_start(config=config, run_dir=str(run_dir))

        rng = np.random.default_rng(config.train.seed)
        generator = torch.Generator().manual_seed(config.train.seed)
        initial = {"step": 0, "eval_success_rate": evaluate(env, policy, config)}
        tracker.log_metrics({"eval_success_rate": initial["eval_success_rate"]}, step=0)
        result.history.append(initial)
        console.print(f"warm start eval success: {initial['eval_success_rate']:.2f}")
        last_batch = None
        with _progress(console) as progress:
            bar = progress.add_task("train", total=config.train.steps, success=0.0, eval=f"{initial['eval_success_rate']:.2f}", step_s=0.0)
            for step in range(1, config.train.steps + 1):
                timer = StepTimer()
                with timer.section("rollout", device):
                    last_batch = collect_step(env, policy, config, rng, generator)
                metrics = learner.update(last_batch, timer)
                metrics.update(timer.metrics())
                metrics["time/step_s"] = sum(timer.seconds.values())
                every = config.train.eval_every
                if step == config.train.steps or (every and step % every == 0):
                    metrics["eval_success_rate"] = evaluate(env, policy, config)
                tracker.log_metrics(metrics, step=step)
                hooks.pcm_on_step_end(step=step, metrics=metrics)
                result.history.append({"step": step, **metrics})
                shown = f"{metrics['eval_success_rate']:.2f}" if "eval_success_rate" in metrics else progress.tasks[0].fields["eval"]
                progress.update(bar, advance=1, success=metrics["success_rate"], eval=shown, step_s=metrics["time/step_s"])
        _write_artifacts(result, policy, last_batch, tracker)
        hooks.pcm_on_run_end(summary={"run_dir": str(run_dir), "history": result.history})
        tracker.end()
    except BaseException:
        tracker.end(status="FAILED")
        raise
    finally:
        env.close()
    _print_summary(console, result, tracker)
    return result


def _write_artifacts(result: RunResult, policy: PolicyBackend, batch: RolloutBatch | None, tracker: Tracker) -> None:
    run_dir = result.run_dir
    policy.save(str(run_dir / "policy"))
    plot_keep_probabilities(result.history, run_dir / "keep_probabilities.png")
    plot_success(result.history, run_dir / "success.png")
    if batch is not None and "image" in batch.obs:
        for label, wanted in (("success", 1.0), ("failure", 0.0)):
            found = torch.nonzero(batch.rewards == wanted).squeeze(1)
            if found.numel():
                i = int(found[0])
                write_gif(batch.obs["image"][i, : int(batch.lengths[i])], run_dir / f"rollout_{label}.gif")
    for name in ("config.yaml", "keep_probabilities.png", "success.png", "rollout_success.gif", "rollout_failure.gif"):
        if (run_dir / name).exists():
            tracker.log_artifact(run_dir / name)
    tracker.log_artifact(run_dir / "policy", folder="policy")


def _print_summary(console: Console, result: RunResult, tracker: Tracker) -> None:
    evals = [row["eval_success_rate"] for row in result.history if "eval_success_rate" in row]
    if evals:
        console.print(f"eval success: {evals[0]:.2f} (warm start) -> {evals[-1]:.2f} (final)")
    console.print(f"run folder: {result.run_dir}")
    if tracker.ui_command():
        console.print(f"MLflow run {result.run_id}; look at it with: {tracker.ui_command()}")
