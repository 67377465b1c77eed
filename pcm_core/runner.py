"""The training run behind ``pcm-run``: build components, warm start, then the loop
collect -> update -> log -> evaluate -> checkpoint (:func:`train`), read top to bottom.

Everything a run holds between steps is a :class:`Run`: setting it up (ranks, run folder,
components, warm start, resume) and writing checkpoints and artifacts live there, outside the loop.
"""

from __future__ import annotations

import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pcm_core import checkpoint, distributed, videos
from pcm_core.collectors import EVAL_INIT_OFFSET, Collector
from pcm_core.communicator import Communicator, Context
from pcm_core.config import ResolvedComponent, RunConfig, short_repr
from pcm_core.errors import WRITE_FIX, ConfigError, OutputError, PcmError, reason
from pcm_core.fingerprint import environment_fingerprint
from pcm_core.interfaces import COMPONENT_KINDS, EnvBackend, PhaseSegmenter, PolicyBackend
from pcm_core.learner import Learner
from pcm_core.plots import plot_keep_probabilities, plot_success
from pcm_core.profiling import StepTimer, eta_text
from pcm_core.registry import get_registry
from pcm_core.run_lock import RunLock
from pcm_core.tracking import Tracker
from pcm_core.types import RolloutBatch
from pcm_core.vector_env import SubprocessEnv
from pcm_core.warm_start import warm_start

__all__ = ["EVAL_INIT_OFFSET", "Run", "RunResult", "train"]


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
    """``train.device`` as a torch device: ``auto`` is CUDA when there is one; ``cuda`` without one
    is a config error (two lines), not a failure deep inside torch."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device = 'cuda', but torch sees no CUDA device here "
                          f"(torch {torch.__version__}, CUDA build: {torch.version.cuda is not None}).\n"
                          "Fix: --set train.device=cpu (or auto), or install a CUDA build of torch on a GPU machine")
    return torch.device(name)


def make_collector(
    env: EnvBackend, policy: PolicyBackend, config: RunConfig, components: dict[str, Any], rng: np.random.Generator,
    generator: torch.Generator, log: Any = print,
) -> Collector:
    """Ray rollout actors when ``distributed.rollout_workers > 0``, else episodes in this process."""
    if config.distributed.rollout_workers == 0:
        return Collector(env, policy, config, rng, generator)
    from pcm_core.ray_rollouts import RayRollouts

    return RayRollouts(env, policy, config, rng, generator, components, log=log)


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
            "segmenter": named_by_env(components["segmenter"].build(), components["env"].cls.phase_names),
            "proxy": components["proxy"].build(),
            "sampler": components["sampler"].build(),
        }
    except BaseException:
        env.close()
        raise


def named_by_env(segmenter: PhaseSegmenter, env_phase_names: tuple[str, ...] | None) -> PhaseSegmenter:
    """A segmenter with a ``phase_names`` option left unset (``env``) takes the names the env gives
    its labels, so plots and the tracker say "align + grasp", not "label 1"."""
    options = segmenter.options
    if env_phase_names and "phase_names" in type(options).model_fields and options.phase_names is None:
        segmenter.options = options.model_copy(update={"phase_names": list(env_phase_names)})
    return segmenter


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
    stamp = time.strftime("%Y%m%d-%H%M%S")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        for n in range(1, 1000):
            run_dir = output_dir / (stamp if n == 1 else f"{stamp}-{n}")
            try:
                run_dir.mkdir()
                (run_dir / "config.yaml").touch()  # a folder that takes no file is found now, not at the first checkpoint
                return run_dir
            except FileExistsError:
                continue
    except OSError as exc:
        raise OutputError(f"cannot create a run folder in '{output_dir}': {reason(exc)}.\n{WRITE_FIX}") from None
    raise OutputError(f"cannot create a run folder in '{output_dir}': 999 runs started this second.\n{WRITE_FIX}")


def _env_rngs(env: EnvBackend) -> dict[str, np.random.Generator]:
    """The env's numpy generator, when it keeps one as ``env.rng`` (the tabletop expert's noise)."""
    rng = getattr(env, "rng", None)
    return {"env": rng} if isinstance(rng, np.random.Generator) else {}


class StepProgress:
    """Progress of the loop: step, training success, last evaluation, kept fraction, seconds per step.

    On a terminal a live bar; otherwise (a log file, nohup, CI) one plain line every ``every`` steps
    and at the last: ``step 12/50  success 0.31  eval 0.22  kept 0.24  3.1 s/step  ETA 2m 5s``.
    """

    def __init__(self, console: Console, total: int, done: int, last_eval: float | None, every: int = 1) -> None:
        self.console, self.total, self.done, self.every = console, total, done, every
        self.eval = f"{last_eval:.2f}" if last_eval is not None else "-"
        self.seconds: list[float] = []
        self.progress = None
        if console.is_terminal:
            self.progress = Progress(
                TextColumn("[bold]step"),
                MofNCompleteColumn(),
                BarColumn(),
                TextColumn("success {task.fields[success]:.2f}  eval {task.fields[eval]}  {task.fields[step_s]:.1f}s/step"),
                TimeElapsedColumn(),
                console=console,
                transient=False,
            )
            self.bar = self.progress.add_task("train", total=total, completed=done, success=0.0, eval=self.eval, step_s=0.0)

    def __enter__(self) -> "StepProgress":
        if self.progress is not None:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def update(self, metrics: dict[str, float]) -> None:
        self.done += 1
        self.seconds.append(metrics["time/step_s"])
        if "eval_success_rate" in metrics:
            self.eval = f"{metrics['eval_success_rate']:.2f}"
        if self.progress is not None:
            self.progress.update(self.bar, advance=1, success=metrics["success_rate"], eval=self.eval,
                                 step_s=metrics["time/step_s"])
        elif self.done % self.every == 0 or self.done == self.total:
            self.console.print(self.line(metrics), highlight=False, markup=False, soft_wrap=True)

    def line(self, metrics: dict[str, float]) -> str:
        """The plain progress line after a step (ETA from the mean step time so far)."""
        step_s = sum(self.seconds) / len(self.seconds)
        kept = metrics.get("kept_chunk_fraction", 1.0)
        return (f"step {self.done}/{self.total}  success {metrics['success_rate']:.2f}  eval {self.eval}  kept {kept:.2f}  "
                f"{metrics['time/step_s']:.1f} s/step  ETA {eta_text(step_s * (self.total - self.done))}")


@dataclass
class Run:
    """What one training run holds between steps, and the work around the loop: setting up
    (:meth:`start`), logging a step, checkpoints, the end of the run."""

    config: RunConfig  # the whole run
    local: RunConfig  # this rank's view: its groups, rollout seed, tracking
    context: Context
    device: torch.device
    env: EnvBackend
    policy: PolicyBackend
    learner: Learner
    collector: Collector
    tracker: Tracker
    hooks: Any
    console: Console
    result: RunResult
    step: int = 0  # the last finished step
    last_rollouts: RolloutBatch | None = None  # the latest step's batch, for the training video
    last_checkpoint: Path | None = None
    lock: RunLock | None = None  # rank 0 holds the run folder while the run is open

    @classmethod
    def start(
        cls, config: RunConfig, components: dict[str, ResolvedComponent], console: Console, resume: checkpoint.Checkpoint | None
    ) -> "Run":
        """Seeds, ranks, run folder, components, warm start (or the state of ``resume``), tracking,
        and the warm start's evaluation."""
        seed_everything(config.train.seed)
        if config.train.threads is not None:
            torch.set_num_threads(config.train.threads)
        context, device = distributed.setup(config.distributed, resolve_device(config.train.device))  # this rank's device
        local = distributed.local_config(config, context)  # this rank's groups, rollout seed and tracking
        if not context.is_main:
            console = Console(quiet=True)
        run_dir = cls._run_dir(config, context, resume)
        lock = RunLock.acquire(run_dir) if context.is_main else None
        try:
            parts = build(components, local, device)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        env, policy = parts["env"], parts["policy"]
        tracker = Tracker(local.tracking, run_dir, log=console.print)
        collector: Collector | None = None
        try:
            if resume is None and config.train.sft.enabled and getattr(policy.options, "path", None) is None and context.is_main:
                warm_start(policy, env, config, log=console.print)  # other ranks receive rank 0's weights
            learner = distributed.make_learner(context, config, policy, parts["segmenter"], parts["proxy"], parts["sampler"])
            rng, generator = np.random.default_rng(local.train.seed), torch.Generator().manual_seed(local.train.seed)
            collector = make_collector(env, policy, local, components, rng, generator, log=console.print)
            run = cls(config, local, context, device, env, policy, learner, collector, tracker, get_registry().hook(),
                      console, RunResult(run_dir), lock=lock)
            if resume is not None:
                run.restore(resume)
            tracker.start(resolved_params(config, components, learner.segmenter.phase_names),
                          tags=environment_fingerprint(device), run_ids=tracker_ids(resume))
            run.result.run_id, run.result.tracking_uri = tracker.run_id, tracker.uri
            if context.is_main:
                (run_dir / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
            run.hooks.pcm_on_run_start(config=config, run_dir=str(run_dir))
            if resume is None:
                run.log(0, {"eval_success_rate": run.evaluate(0)})
                console.print(f"warm start eval success: {run.result.history[0]['eval_success_rate']:.2f}")
            return run
        except BaseException:
            tracker.end(status="FAILED")
            if lock is not None:
                lock.release()
            env.close()
            if collector is not None:
                collector.close()
            distributed.shutdown(context)
            raise

    @staticmethod
    def _run_dir(config: RunConfig, context: Context, resume: checkpoint.Checkpoint | None) -> Path:
        """The folder of ``resume``'s run, or a new one made by rank 0 (and told to the others)."""
        if resume is None:
            return Communicator(context).broadcast(_new_run_dir(Path(config.train.output_dir)) if context.is_main else None)
        assert resume.path is not None
        if resume.step >= config.train.steps:
            raise checkpoint.CheckpointError(
                f"checkpoint '{resume.path}' is at step {resume.step}, the run has train.steps = {config.train.steps}.\n"
                f"Fix: add --set train.steps=N with N > {resume.step} to train further"
            )
        run_dir = resume.path.parent.parent
        run_dir.mkdir(parents=True, exist_ok=True)
        return run_dir

    @property
    def last_eval(self) -> float | None:
        evals = [row["eval_success_rate"] for row in self.result.history if "eval_success_rate" in row]
        return evals[-1] if evals else None

    def evaluates_at(self, step: int) -> bool:
        """The last step, and every ``train.eval_every`` steps."""
        every = self.config.train.eval_every
        return step == self.config.train.steps or bool(every and step % every == 0)

    def evaluate(self, step: int) -> float:
        """The eval success rate; rank 0 writes the evaluation videos and, after an update, the
        training video of this step's rollouts with PCM's kept chunks (``<run>/videos``) and logs
        them to the tracker."""
        evaluation = self.collector.evaluate()
        settings = self.config.tracking
        if self.context.is_main:
            folder = self.result.run_dir / "videos"
            paths = videos.eval_videos(evaluation.batch, evaluation.groups, step, folder, settings.eval_videos)
            selected = self.learner.last_selection
            if settings.train_videos and step > 0 and selected is not None and self.last_rollouts is not None:
                paths.append(videos.training_video(self.last_rollouts, selected.phases, selected.selection.keep,
                                                   self.learner.segmenter.phase_names, step, folder))
            for path in filter(None, paths):
                self.tracker.log_video(path, step)
        return evaluation.success_rate

    def checkpoints_at(self, step: int) -> bool:
        """The last step, and every ``train.checkpoint_every`` steps."""
        every = self.config.train.checkpoint_every
        return step == self.config.train.steps or bool(every and step % every == 0)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """To the tracker, the step hooks and the run's history."""
        self.tracker.log_metrics(metrics, step=step)
        if step > 0:
            self.hooks.pcm_on_step_end(step=step, metrics=metrics)
        self.result.history.append({"step": step, **metrics})
        self.step = step

    def stop_requested(self, signal_name: str | None) -> str | None:
        """This rank's stop request, or SIGTERM when another rank has one: every rank calls this
        once per step (a collective), so all ranks stop after the same step."""
        anyone = self.learner.comm.any(signal_name is not None)
        return signal_name or ("SIGTERM" if anyone else None)

    def check_skips(self, step: int) -> None:
        """Stop the run (with a checkpoint of the last good weights) after too many non-finite updates."""
        skips = self.learner.consecutive_skips
        if skips >= self.config.train.max_skipped_updates:
            path = self.save(step)  # the skipped updates never touched the weights
            raise TrainingStopped(
                f"{skips} consecutive updates had a NaN/inf loss, gradient or update; stopped at step {step}, last good weights in {path}.\n"
                f"Fix: lower train.lr or train.max_grad_norm, then: pcm-run --resume {path}"
            )

    def capture(self, step: int) -> checkpoint.Checkpoint:
        """Everything needed to continue the run after ``step`` exactly."""
        tensors, state = self.learner.state_dict()
        rng_tensors, rng_meta = checkpoint.rng_state(
            {"rollout": self.collector.generator}, {"groups": self.collector.rng, **_env_rngs(self.env)}
        )
        tensors["rng"] = {**tensors["rng"], **rng_tensors}
        state.update(history=self.result.history, run_id=self.tracker.run_id, tracker_ids=self.tracker.run_ids, rng=rng_meta)
        state["faults"]["env_restarts"] = getattr(self.env, "restarts", 0)
        return checkpoint.Checkpoint(step, tensors, state, self.config.model_dump(mode="json"))

    def restore(self, saved: checkpoint.Checkpoint) -> None:
        """Put the state of ``saved`` back into the freshly built components; a checkpoint whose
        contents do not fit them (another model size, a hand-edited state) is a checkpoint error."""
        try:
            self.learner.load_state_dict(saved.tensors, saved.state)
            if isinstance(self.env, SubprocessEnv):
                self.env.restarts = int(saved.state["faults"].get("env_restarts", 0))
            checkpoint.load_rng_state(
                saved.tensors["rng"], saved.state["rng"], {"rollout": self.collector.generator},
                {"groups": self.collector.rng, **_env_rngs(self.env)},
            )
            history = list(saved.state["history"])
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError, AttributeError) as exc:
            raise checkpoint.CheckpointError(
                f"checkpoint '{saved.path}' does not fit this run: {type(exc).__name__} "
                f"{short_repr(str(exc))} while restoring it.\n"
                "Fix: resume with the config it was saved with (its config.yaml), or start a new run"
            ) from None
        if self.context.active:
            distributed.reseed_rollouts(self.collector.rng, self.collector.generator, self.local, saved.step)
        self.result.history = history
        self.step = saved.step
        self.console.print(f"resuming {self.result.run_dir} from step {saved.step}")

    def save(self, step: int) -> Path:
        """A checkpoint of ``step``; every rank gathers its tensors, rank 0 writes it."""
        saved = self.capture(step)
        if self.context.is_main:
            self.last_checkpoint = checkpoint.save(self.result.run_dir, saved, keep=self.config.train.keep_checkpoints)
        else:
            self.last_checkpoint = self.result.run_dir / checkpoint.CHECKPOINTS / f"step_{step:06d}"
        return self.last_checkpoint

    def stopped(self, signal_name: str) -> RunResult:
        """End of a run stopped by a signal after ``self.step`` (its checkpoint is written)."""
        self.result.stopped = True
        self.hooks.pcm_on_run_end(summary={"run_dir": str(self.result.run_dir), "history": self.result.history, "stopped": True})
        self.tracker.end(status="KILLED")
        self.console.print(f"stopped by {signal_name} after step {self.step}; checkpoint: {self.last_checkpoint}", soft_wrap=True)
        self.console.print(f"resume with: pcm-run --resume {self.last_checkpoint}", soft_wrap=True, markup=False, highlight=False)
        return self.result

    def finish(self) -> RunResult:
        """End of a finished run: the final policy and artifacts (rank 0), the run-end hook."""
        self.learner.parallel.release()
        if self.context.is_main:
            _write_artifacts(self.result, self.policy, self.tracker, self.learner.segmenter.phase_names,
                             self.config.tracking.log_policy)
        self.hooks.pcm_on_run_end(summary={"run_dir": str(self.result.run_dir), "history": self.result.history, "stopped": False})
        self.tracker.end()
        return self.result

    def close(self) -> None:
        self.env.close()
        self.collector.close()
        distributed.shutdown(self.context)
        if self.lock is not None:
            self.lock.release()


def train(
    config: RunConfig,
    components: dict[str, ResolvedComponent],
    console: Console | None = None,
    resume: checkpoint.Checkpoint | None = None,
) -> RunResult:
    """Run ``config`` to the end (or continue the checkpoint ``resume``); returns the run folder
    and the per-step metrics."""
    console = console or Console()
    run = Run.start(config, components, console, resume)
    steps = config.train.steps
    try:
        with StopRequests() as stop, StepProgress(console, steps, run.step, run.last_eval, config.train.progress_every) as progress:
            for step in range(run.step + 1, steps + 1):
                timer = StepTimer()
                with timer.section("rollout", run.device):
                    batch = run.last_rollouts = run.collector.step_batch()  # collect: the step's groups of episodes
                metrics = run.learner.update(batch, timer)  # update: score phases, keep chunks, backprop them
                metrics.update(run.collector.fault_metrics(batch))
                metrics.update(run.collector.publish())  # the new weights to where the episodes run
                metrics.update(timer.metrics())
                metrics["time/step_s"] = sum(timer.seconds.values())
                metrics["time/rollout_policy_s"] = batch.policy_s  # of time/rollout_s; the rest is the env's
                if run.evaluates_at(step):
                    metrics["eval_success_rate"] = run.evaluate(step)  # evaluate (and write its videos)
                run.log(step, metrics)  # log
                progress.update(metrics)
                run.check_skips(step)
                stopping = run.stop_requested(stop.signal)  # read once: a later signal waits for the next step
                if stopping is not None or run.checkpoints_at(step):
                    run.save(step)  # checkpoint
                if stopping is not None and step < steps:
                    return run.stopped(stopping)
        result = run.finish()
    except BaseException:
        run.tracker.end(status="FAILED")
        raise
    finally:
        run.close()
    _print_summary(console, result, run.tracker)
    return result


def _write_artifacts(result: RunResult, policy: PolicyBackend, tracker: Tracker, phase_names: list[str], log_policy: bool) -> None:
    run_dir = result.run_dir
    policy.save(str(run_dir / "policy"))
    plot_keep_probabilities(result.history, run_dir / "keep_probabilities.png", phase_names)
    plot_success(result.history, run_dir / "success.png")
    for name in ("config.yaml", "keep_probabilities.png", "success.png"):
        if (run_dir / name).exists():
            tracker.log_artifact(run_dir / name)
    if log_policy:
        tracker.log_artifact(run_dir / "policy", folder="policy")


def resolved_params(config: RunConfig, components: dict[str, ResolvedComponent], phase_names: list[str]) -> dict[str, Any]:
    """The run's params for the tracker: the config with each component's options as validated
    (defaults filled in), and the names of the phases."""
    params = config.model_dump(mode="json")
    for component in COMPONENT_KINDS:
        section, key = component.options_key.split(".")
        params[section][key] = components[component.name].options.model_dump(mode="json")
    return {**params, "phase_names": phase_names}


def tracker_ids(resume: checkpoint.Checkpoint | None) -> dict[str, str]:
    """The tracker run ids a checkpoint holds (checkpoints from before several trackers held only MLflow's)."""
    if resume is None:
        return {}
    saved = resume.state.get("tracker_ids")
    if isinstance(saved, dict):
        return {str(k): str(v) for k, v in saved.items()}
    return {"mlflow": resume.state["run_id"]} if resume.state.get("run_id") else {}


def _print_summary(console: Console, result: RunResult, tracker: Tracker) -> None:
    evals = [row["eval_success_rate"] for row in result.history if "eval_success_rate" in row]
    if evals:
        console.print(f"eval success: {evals[0]:.2f} (warm start) -> {evals[-1]:.2f} (final)")
    console.print(f"run folder: {result.run_dir}")
    if tracker.ui_command():
        console.print(f"MLflow run {result.run_id}; look at it with: {tracker.ui_command()}")
