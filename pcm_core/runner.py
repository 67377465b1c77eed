"""The training run behind ``pcm-run``: build components, warm start, train, evaluate, track."""

from __future__ import annotations

import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pcm_core import checkpoint, distributed
from pcm_core.communicator import Communicator
from pcm_core.algo.grpo import uniform_groups
from pcm_core.config import ResolvedComponent, RunConfig
from pcm_core.errors import PcmError
from pcm_core.interfaces import EnvBackend, PolicyBackend
from pcm_core.learner import Learner, policy_precision
from pcm_core.plots import plot_keep_probabilities, plot_success, write_gif
from pcm_core.profiling import StepTimer
from pcm_core.registry import get_registry
from pcm_core.rollout import GroupSpec, collect, concat
from pcm_core.tracking import Tracker
from pcm_core.types import RolloutBatch
from pcm_core.vector_env import SubprocessEnv
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
    stopped: bool = False


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
    env: EnvBackend, policy: PolicyBackend, config: RunConfig, rng: np.random.Generator, generator: torch.Generator,
    collector: Callable[..., RolloutBatch] = collect,
) -> RolloutBatch:
    """One step's groups; with dynamic sampling, groups with equal outcomes are replaced by
    fresh ones (up to 3 extra rounds) so that every group carries a learning signal.
    ``collector`` runs the episodes (:func:`~pcm_core.rollout.collect`, or Ray rollout actors)."""
    train = config.train
    batch = collector(env, policy, draw_groups(rng, env, train.tasks_per_step), train.group_size, generator)
    if not train.dynamic_sampling:
        return batch
    kept = [batch.select_trajectories(_mixed_members(batch))]
    have = int(kept[0].group_index.unique().numel()) if kept[0].num_trajectories else 0
    for _ in range(3):
        if have >= train.tasks_per_step:
            break
        extra = collector(env, policy, draw_groups(rng, env, train.tasks_per_step), train.group_size, generator)
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
        with policy_precision(policy.device, config.train):
            batch = collect(env, policy, groups, 1, generator, greedy=config.train.eval_greedy)
        successes.extend(batch.rewards.tolist()[: episodes - start])
    return float(np.mean(successes))


def rollout_workers(
    local: RunConfig, components: dict[str, ResolvedComponent], policy: PolicyBackend, log: Callable[[str], Any] = print
) -> Any:
    """Ray rollout actors for this rank when ``distributed.rollout_workers > 0`` (else None)."""
    if local.distributed.rollout_workers == 0:
        return None
    from pcm_core.ray_rollouts import RayRollouts

    return RayRollouts(local, components, policy, log=log)


def build(components: dict[str, ResolvedComponent], config: RunConfig, device: torch.device) -> dict[str, Any]:
    """Instantiate every component (this is where heavy imports and model loading happen).
    The env (its worker processes, its simulators) is closed again if a later component fails."""
    num_envs = config.train.tasks_per_step * config.train.group_size
    if config.env.workers > 0:
        env = SubprocessEnv(
            components["env"], num_envs, config.train.seed, config.env.workers, timeout_s=config.env.worker_timeout_s
        )
    else:
        env = components["env"].build(num_envs=num_envs, seed=config.train.seed)
    try:
        return {
            "env": env,
            "policy": components["policy"].build().to(device),
            "segmenter": components["segmenter"].build(),
            "proxy": components["proxy"].build(),
            "sampler": components["sampler"].build(),
        }
    except BaseException:
        env.close()
        raise


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


class StopRequests:
    """SIGINT/SIGTERM during training: the first asks the loop to stop after the current step (it
    then writes a checkpoint and exits 0); a second one interrupts at once (exit code 130)."""

    def __init__(self) -> None:
        self.signal: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name
        sys.stderr.write(f"\n{self.signal}: stopping after this step and writing a checkpoint (again to quit now)\n")


class TrainingStopped(PcmError):
    """The run stopped itself (e.g. too many non-finite updates); a checkpoint was written."""

    exit_code = 1


def _new_run_dir(output_dir: Path) -> Path:
    """A fresh ``<output_dir>/<timestamp>`` folder (``-2``, ``-3``... when runs start in the same second)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1, 1000):
        run_dir = output_dir / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            continue
    raise RuntimeError(f"cannot create a run folder under {output_dir}")


def _env_rngs(env: EnvBackend) -> dict[str, np.random.Generator]:
    """The env's numpy generator, when it keeps one as ``env.rng`` (the tabletop expert's noise)."""
    rng = getattr(env, "rng", None)
    return {"env": rng} if isinstance(rng, np.random.Generator) else {}


def capture(
    step: int, config: RunConfig, learner: Learner, env: EnvBackend, rng: np.random.Generator,
    generator: torch.Generator, history: list[dict[str, float]], run_id: str | None,
) -> checkpoint.Checkpoint:
    """Everything needed to continue the run after ``step`` exactly."""
    optimizer_tensors, optimizer_meta = checkpoint.optimizer_state(learner.optimizer)
    rng_tensors, rng_meta = checkpoint.rng_state(
        {"learner": learner.generator, "rollout": generator}, {"groups": rng, **_env_rngs(env)}
    )
    pcm_state = learner.keep_probs.state_dict()
    tensors = {
        "policy": learner.policy.module.state_dict(),
        "optimizer": optimizer_tensors,
        "pcm": {k: v for k, v in pcm_state.items() if isinstance(v, torch.Tensor)},
        "rng": rng_tensors,
    }
    if learner.reference is not None:
        tensors["reference"] = learner.reference.module.state_dict()
    state = {
        "history": history,
        "run_id": run_id,
        "optimizer": optimizer_meta,
        "pcm": {k: v for k, v in pcm_state.items() if not isinstance(v, torch.Tensor)},
        "rng": rng_meta,
        "faults": {
            "skipped_updates": learner.skipped_updates,
            "consecutive_skips": learner.consecutive_skips,
            "env_restarts": getattr(env, "restarts", 0),
        },
    }
    return checkpoint.Checkpoint(step, tensors, state, config.model_dump(mode="json"))


def restore(
    saved: checkpoint.Checkpoint, learner: Learner, env: EnvBackend, rng: np.random.Generator, generator: torch.Generator
) -> None:
    """Put the state of ``saved`` back into freshly built components."""
    learner.policy.module.load_state_dict(saved.tensors["policy"])
    if learner.reference is not None and "reference" in saved.tensors:
        learner.reference.module.load_state_dict(saved.tensors["reference"])
    checkpoint.load_optimizer_state(learner.optimizer, saved.tensors["optimizer"], saved.state["optimizer"])
    learner.keep_probs.load_state_dict({**saved.tensors["pcm"], **saved.state["pcm"]})
    learner.skipped_updates = int(saved.state["faults"]["skipped_updates"])
    learner.consecutive_skips = int(saved.state["faults"]["consecutive_skips"])
    if isinstance(env, SubprocessEnv):
        env.restarts = int(saved.state["faults"].get("env_restarts", 0))
    checkpoint.load_rng_state(
        saved.tensors["rng"], saved.state["rng"], {"learner": learner.generator, "rollout": generator},
        {"groups": rng, **_env_rngs(env)},
    )


def train(
    config: RunConfig,
    components: dict[str, ResolvedComponent],
    console: Console | None = None,
    resume: checkpoint.Checkpoint | None = None,
) -> RunResult:
    """Run ``config`` to the end (or continue the checkpoint ``resume``); returns the run folder
    and the per-step metrics."""
    console = console or Console()
    seed_everything(config.train.seed)
    if config.train.threads is not None:
        torch.set_num_threads(config.train.threads)
    device = resolve_device(config.train.device)
    context, device = distributed.setup(config.distributed, device)  # under torchrun: this rank's device
    local = distributed.local_config(config, context)  # this rank's groups, rollout seed and tracking
    if not context.is_main:
        console = Console(quiet=True)
    if resume is not None:
        assert resume.path is not None
        run_dir = resume.path.parent.parent
        if resume.step >= config.train.steps:
            raise checkpoint.CheckpointError(
                f"checkpoint '{resume.path}' is at step {resume.step}, the run has train.steps = {config.train.steps}.\n"
                f"Fix: add --set train.steps=N with N > {resume.step} to train further"
            )
        run_dir.mkdir(parents=True, exist_ok=True)
    else:
        run_dir = Communicator(context).broadcast(_new_run_dir(Path(config.train.output_dir)) if context.is_main else None)
    parts = build(components, local, device)
    env, policy = parts["env"], parts["policy"]
    hooks = get_registry().hook()
    tracker = Tracker(local.tracking, local_dir=run_dir / "mlruns", log=console.print)
    result = RunResult(run_dir)
    rng = np.random.default_rng(local.train.seed)
    generator = torch.Generator().manual_seed(local.train.seed)
    rollouts = None
    try:
        if resume is None and config.train.sft.enabled and getattr(policy.options, "path", None) is None and context.is_main:
            warm_start(policy, env, config, log=console.print)  # other ranks receive rank 0's weights
        learner = distributed.make_learner(context, config, policy, parts["segmenter"], parts["proxy"], parts["sampler"])
        first_step = 1
        if resume is not None:
            learner.parallel.before_restore(resume, learner.optimizer)
            restore(resume, learner, env, rng, generator)
            learner.parallel.gather_for_rollouts()
            if context.active:
                distributed.reseed_rollouts(rng, generator, local, resume.step)
            result.history = list(resume.state["history"])
            first_step = resume.step + 1
            console.print(f"resuming {run_dir} from step {resume.step}")
        tracker.start(config.model_dump(mode="json"), run_id=resume.state.get("run_id") if resume else None)
        result.run_id, result.tracking_uri = tracker.run_id, tracker.uri
        if context.is_main:
            (run_dir / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
        hooks.pcm_on_run_start(config=config, run_dir=str(run_dir))

        if resume is None:
            initial = {"step": 0, "eval_success_rate": evaluate(env, policy, config)}
            tracker.log_metrics({"eval_success_rate": initial["eval_success_rate"]}, step=0)
            result.history.append(initial)
            console.print(f"warm start eval success: {initial['eval_success_rate']:.2f}")
        evals = [row["eval_success_rate"] for row in result.history if "eval_success_rate" in row]
        last_batch = None
        rollouts = rollout_workers(local, components, policy, log=console.print)

        def save(step: int) -> Path:
            saved = learner.parallel.full_tensors(capture(step, config, learner, env, rng, generator, result.history, tracker.run_id))
            learner.parallel.gather_for_rollouts()
            if not context.is_main:  # rank 0 writes the checkpoint
                return run_dir / checkpoint.CHECKPOINTS / f"step_{step:06d}"
            return checkpoint.save(run_dir, saved, keep=config.train.keep_checkpoints)

        step, stopping = first_step - 1, None
        with StopRequests() as stop, _progress(console) as progress:
            bar = progress.add_task(
                "train", total=config.train.steps, completed=step, success=0.0,
                eval=f"{evals[-1]:.2f}" if evals else "-", step_s=0.0,
            )
            for step in range(first_step, config.train.steps + 1):
                timer = StepTimer()
                with timer.section("rollout", device), policy_precision(device, config.train):
                    last_batch = collect_step(env, policy, local, rng, generator, rollouts.collect if rollouts else collect)
                metrics = learner.update(last_batch, timer)
                metrics["faults/env_restarts"] = float(getattr(env, "restarts", 0))
                metrics["faults/dropped_trajectories"] = float(last_batch.dropped)
                if rollouts is not None:  # the new weights go to the rollout actors
                    metrics.update(rollouts.publish(policy))
                    learner.parallel.gather_for_rollouts()
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
                if learner.consecutive_skips >= config.train.max_skipped_updates:
                    # the skipped updates never touched the weights: this checkpoint holds the last good ones
                    path = save(step)
                    raise TrainingStopped(
                        f"{learner.consecutive_skips} consecutive updates had a NaN/inf loss or gradient; "
                        f"stopped at step {step}, last good weights in {path}.\n"
                        f"Fix: lower train.lr or train.max_grad_norm, then: pcm-run --resume {path}"
                    )
                # read once: a signal arriving after this point waits for the next step, on every rank alike
                anyone = learner.comm.any(stop.signal is not None)  # a collective: every rank calls it
                stopping = stop.signal or ("SIGTERM" if anyone else None)
                every = config.train.checkpoint_every
                if stopping is not None or (every and step % every == 0) or step == config.train.steps:
                    path = save(step)
                if stopping is not None and step < config.train.steps:
                    break
        if stopping is not None and step < config.train.steps:
            result.stopped = True
            hooks.pcm_on_run_end(summary={"run_dir": str(run_dir), "history": result.history, "stopped": True})
            tracker.end(status="KILLED")
            console.print(f"stopped by {stopping} after step {step}; checkpoint: {path}", soft_wrap=True)
            console.print(f"resume with: pcm-run --resume {path}", soft_wrap=True, markup=False, highlight=False)
            return result
        learner.parallel.release()
        if context.is_main:
            _write_artifacts(result, policy, last_batch, tracker)
        hooks.pcm_on_run_end(summary={"run_dir": str(run_dir), "history": result.history, "stopped": False})
        tracker.end()
    except BaseException:
        tracker.end(status="FAILED")
        raise
    finally:
        env.close()
        if rollouts is not None:
            rollouts.close()
        distributed.shutdown(context)
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
