"""``pcm-run eval``: a policy evaluated per task, as benchmarks report it.

Every task of ``evaluation.tasks`` (default: all) runs ``evaluation.episodes_per_task`` episodes,
episode ``k`` of task ``t`` from initial state ``k`` (for LIBERO: the suite's fixed initial
state ``k``, so 50 episodes per task are the published protocol), greedy by default. The report
gives per-task and overall success with Wilson 95% intervals, as markdown and JSON in the output
folder and in the trackers, with a few MP4s per task and the environment fingerprint.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

from pcm_core import videos
from pcm_core.config import RunConfig
from pcm_core.errors import ConfigError
from pcm_core.fingerprint import environment_fingerprint
from pcm_core.interfaces import EnvBackend, PolicyBackend
from pcm_core.learner import policy_precision
from pcm_core.profiling import eta_text
from pcm_core.rollout import GroupSpec, collect

WILSON_Z = 1.959963984540054  # the two-sided 95% normal quantile


def wilson_interval(successes: int, episodes: int, z: float = WILSON_Z) -> tuple[float, float]:
    """The Wilson score interval of a success rate ``successes / episodes`` (``(0, 1)`` for none)."""
    if episodes == 0:
        return 0.0, 1.0
    rate = successes / episodes
    denominator = 1 + z * z / episodes
    centre = (rate + z * z / (2 * episodes)) / denominator
    half = z * math.sqrt(rate * (1 - rate) / episodes + z * z / (4 * episodes * episodes)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class TaskResult:
    task: int
    instruction: str
    episodes: int
    successes: int
    success_rate: float
    low: float
    high: float


@dataclass
class EvalReport:
    tasks: list[TaskResult]
    episodes: int
    successes: int
    success_rate: float
    low: float
    high: float
    greedy: bool
    seconds: float
    fingerprint: dict[str, str]
    videos: list[str]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def markdown(self, title: str) -> str:
        rows = [f"| {t.task} | {t.instruction} | {t.successes}/{t.episodes} | {t.success_rate:.3f} | [{t.low:.3f}, {t.high:.3f}] |"
                for t in self.tasks]
        mode = "greedy" if self.greedy else "sampled"
        return "\n".join([
            f"# {title}", "",
            f"Overall: **{self.successes}/{self.episodes} = {self.success_rate:.3f}** (Wilson 95% [{self.low:.3f}, {self.high:.3f}]), "
            f"{mode} actions, {self.seconds:.0f} s.", "",
            "| task | instruction | successes | rate | Wilson 95% |", "| --- | --- | --- | --- | --- |", *rows, "",
            "Environment: " + ", ".join(f"{k} {v}" for k, v in sorted(self.fingerprint.items())), "",
        ])


def tasks_to_evaluate(config: RunConfig, env: EnvBackend) -> list[int]:
    """``evaluation.tasks``, checked against the env, or every task of the env."""
    tasks = config.evaluation.tasks
    if tasks is None:
        return list(range(env.num_tasks))
    if any(not 0 <= t < env.num_tasks for t in tasks):
        raise ConfigError(
            f"evaluation.tasks = {tasks} names tasks outside 0..{env.num_tasks - 1} of this env.\n"
            "Fix: list task indices of the env (or leave evaluation.tasks unset for all)"
        )
    return list(tasks)


def episode_plan(tasks: list[int], episodes_per_task: int) -> list[GroupSpec]:
    """``(task, initial state)`` of every episode: task by task, initial states ``0..E-1``."""
    return [GroupSpec(task, k) for task in tasks for k in range(episodes_per_task)]


def run_evaluation(
    env: EnvBackend,
    policy: PolicyBackend,
    config: RunConfig,
    folder: Path,
    step: int = 0,
    log: Callable[[str], Any] = print,
) -> EvalReport:
    """Evaluate ``policy`` on ``env`` as ``config.evaluation`` says; MP4s of the first
    ``videos_per_task`` episodes of each task go to ``folder/videos`` (named with ``step``, the
    checkpoint's training step)."""
    settings = config.evaluation
    tasks = tasks_to_evaluate(config, env)
    plan = episode_plan(tasks, settings.episodes_per_task)
    generator = torch.Generator().manual_seed(config.train.seed)
    outcomes: dict[int, list[float]] = {task: [] for task in tasks}
    instructions: dict[int, str] = {}
    written: list[str] = []
    start = time.perf_counter()
    for first in range(0, len(plan), env.num_envs):
        part = plan[first : first + env.num_envs]
        padded = part + [part[-1]] * (env.num_envs - len(part))  # the env steps all its envs: repeat the last episode
        with policy_precision(policy.device, config.train):
            batch = collect(env, policy, padded, 1, generator, greedy=settings.greedy)
        for i, spec in enumerate(part):
            outcomes[spec.task_id].append(float(batch.rewards[i]))
            instructions.setdefault(spec.task_id, batch.instructions[i])
            if spec.init_state < settings.videos_per_task:
                one = batch.select_trajectories(torch.tensor([i]))
                written += [str(path) for path in videos.eval_videos(one, [spec], step, folder / "videos", 1)]
        done = first + len(part)
        elapsed = time.perf_counter() - start
        rate = sum(sum(v) for v in outcomes.values()) / done
        log(f"eval {done}/{len(plan)} episodes  success {rate:.3f}  {elapsed / done:.2f} s/episode  "
            f"ETA {eta_text(elapsed / done * (len(plan) - done))}")
    results = []
    for task in tasks:
        wins, n = int(sum(outcomes[task])), len(outcomes[task])
        results.append(TaskResult(task, instructions[task], n, wins, wins / n, *wilson_interval(wins, n)))
    wins, n = sum(r.successes for r in results), sum(r.episodes for r in results)
    return EvalReport(results, n, wins, wins / n, *wilson_interval(wins, n), settings.greedy, time.perf_counter() - start,
                      environment_fingerprint(policy.device), written)


def write_report(report: EvalReport, folder: Path, title: str) -> tuple[Path, Path]:
    """``eval.json`` and ``eval.md`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "eval.json").write_text(json.dumps(report.to_json(), indent=1) + "\n")
    (folder / "eval.md").write_text(report.markdown(title))
    return folder / "eval.json", folder / "eval.md"


def evaluate_command(config: RunConfig, components: dict[str, Any], console: Any, resume: Any = None) -> EvalReport:
    """What ``pcm-run eval`` does: build env and policy, load the checkpoint ``resume`` (or the
    warm start a training run would start from), evaluate, write the report and log it.

    Output: ``<run>/eval/step_<N>/`` for a checkpoint of a run, else a new ``<output_dir>/<stamp>``.
    """
    from pcm_core.runner import _new_run_dir, build, resolve_device, resolved_params, seed_everything
    from pcm_core.tracking import Tracker
    from pcm_core.warm_start import warm_start

    seed_everything(config.train.seed)
    if config.train.threads is not None:
        torch.set_num_threads(config.train.threads)
    device = resolve_device(config.train.device)
    if resume is not None:
        folder = resume.path.parent.parent / "eval" / f"step_{resume.step:06d}"
        folder.mkdir(parents=True, exist_ok=True)
    else:
        folder = _new_run_dir(Path(config.train.output_dir))
    (folder / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    parts = build(components, config, device)
    env, policy = parts["env"], parts["policy"]
    tracker = Tracker(config.tracking, folder, log=console.print)
    try:
        tasks_to_evaluate(config, env)  # before any warm-start work
        step = 0
        if resume is not None:
            policy.module.load_state_dict(resume.tensors["policy"])
            step = resume.step
            console.print(f"evaluating {resume.path} (training step {step})")
        elif config.train.sft.enabled and getattr(policy.options, "path", None) is None:
            warm_start(policy, env, config, log=console.print)
        policy.module.eval()
        tracker.start({**resolved_params(config, components, parts["segmenter"].phase_names), "mode": "eval"},
                      tags=environment_fingerprint(device))
        report = run_evaluation(env, policy, config, folder, step, log=console.print)
        title = f"Evaluation of {config.policy.name} on {config.env.name}" + (f" (checkpoint step {step})" if resume else "")
        paths = write_report(report, folder, title)
        metrics = {"eval/success_rate": report.success_rate, **{f"eval/task_{t.task}": t.success_rate for t in report.tasks}}
        tracker.log_metrics(metrics, step)
        for path in paths:
            tracker.log_artifact(path)
        for video in report.videos:
            tracker.log_video(Path(video), step)
        tracker.end()
    except BaseException:
        tracker.end(status="FAILED")
        raise
    finally:
        env.close()
    console.print(f"eval success: {report.successes}/{report.episodes} = {report.success_rate:.3f} "
                  f"(Wilson 95% [{report.low:.3f}, {report.high:.3f}])")
    console.print(f"report: {paths[1]}")
    return report
