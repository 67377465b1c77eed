"""Shared pieces: machine description, building the embedded default, one rollout batch, output files."""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from rich.console import Console

from pcm_core.config import RunConfig, load_config, resolve_components
from pcm_core.learner import Learner, SelectionResult
from pcm_core.rollout import GroupSpec, collect
from pcm_core.collectors import EVAL_INIT_OFFSET
from pcm_core.runner import RunResult, resolve_device, seed_everything, train
from pcm_core.types import CompactBatch, RolloutBatch

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"

QUICK_TRAINING = [
    "train.eval_episodes=8", "train.sft.demos=32", "train.sft.epochs=2", "train.tasks_per_step=2", "train.group_size=4",
]
"""Overrides of every quick-mode training run: small steps and a small warm start (in a throw-away cache)."""


def train_to_end(config: RunConfig) -> RunResult:
    """``runner.train`` without console output. A run stopped by SIGINT/SIGTERM ends the benchmark
    (``SystemExit``) instead of counting as a finished run."""
    result = train(config, resolve_components(config), console=Console(quiet=True))
    if result.stopped:
        step = result.history[-1].get("step", 0) if result.history else 0
        raise SystemExit(f"training stopped by a signal after step {step} of {config.train.steps}; nothing written")
    return result


def group_shard(group_index: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Trajectory indices ``[N_r]`` of rank ``rank`` in one collected global batch: the sorted group
    ids cut into ``world_size`` contiguous blocks (sizes differ by at most one group), as a
    data-parallel run's ranks each collect their own share of a step's groups."""
    groups = torch.unique(group_index, sorted=True)
    mine = groups.tensor_split(world_size)[rank]
    return torch.nonzero(torch.isin(group_index, mine)).squeeze(1)


def machine() -> dict[str, Any]:
    """CPU model, core count, torch version and threads, and the GPU when there is one."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def machine_line(m: dict[str, Any], device: str) -> str:
    """``Machine: <cpu>, <cores> cores[, GPU <name>], torch <version> (<device>).`` for the markdown tables."""
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ""
    return f"Machine: {m['cpu']}, {m['cores']} cores{gpu}, torch {m['torch']} ({device})."


def stats(values: Sequence[float]) -> dict[str, float]:
    """min / median / max (and n) of a list of numbers."""
    values = [float(v) for v in values]
    if not values:
        return {"min": float("nan"), "median": float("nan"), "max": float("nan"), "n": 0}
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "n": len(values)}


SIZED_SETUP = [
    "policy.options.queries=token",
    "policy.options.patch_size=16",
    "policy.options.max_instruction_tokens=16",
    "env.options.end_on_success=false",
]
"""What every ``size`` benchmark measures: the tinyvla with one query per action token
(OpenVLA-OFT's parallel decoding, 28 of a 62-token sequence) on trajectories of a fixed 64 chunks
(T = 64, so B = 12 keeps 18.75%), the setup their published figures were taken with."""


EXACT_BUDGET = ["pcm.sampler_options.allocation=pooled"]
"""PCM keeping exactly min(B, T_i) chunks of every trajectory, whatever the default allocation: what the
compute benchmarks measure per B (``per_phase`` keeps at most that many)."""


def config_for(
    sampler: str = "pcm", budget: int = 12, size: str | None = "1m", base: str | Path | None = None, overrides: Sequence[str] = ()
) -> RunConfig:
    """The embedded default (tabletop + tinyvla of ``size`` in :data:`SIZED_SETUP`; None: the
    default options) with ``sampler`` and ``budget``."""
    sized = [f"policy.options.size={size}", *SIZED_SETUP] if size is not None else []
    return load_config(base, [f"pcm.sampler={sampler}", f"pcm.budget={budget}", *sized, "tracking.enabled=false", *overrides])


def apply_batch_args(s: dict[str, Any], args: Any) -> None:
    """``--groups``, ``--group-size`` and ``--dtype`` into benchmark settings ``s``, where given."""
    for key in ("groups", "group_size", "dtype"):
        value = getattr(args, key, None)
        if value is not None:
            s[key] = value


def apply_config_arg(s: dict[str, Any], args: Any, quick: bool) -> None:
    """``--config FILE`` into benchmark settings ``s``: the file, and in full mode its batch shape
    (``train.tasks_per_step`` x ``train.group_size``); quick mode keeps its small one."""
    if getattr(args, "config", None):
        s["config"] = str(args.config)
        if not quick:
            train = load_config(args.config).train
            s.update(groups=train.tasks_per_step, group_size=train.group_size)


def build_policy(config: RunConfig, device: torch.device):
    components = resolve_components(config)
    return components["policy"].build().to(device)


def build_env(config: RunConfig, num_envs: int):
    return resolve_components(config)["env"].build(num_envs=num_envs, seed=config.train.seed)


def start_on_batch(s: dict[str, Any], device: str, base: RunConfig) -> tuple[torch.device, Any, Any]:
    """The shared start of the batch benchmarks: the device, the seed ``s["seed"]``, and ``base``'s
    env of ``s["groups"] x s["group_size"]`` envs and policy. Returns (device, env, policy)."""
    dev = resolve_device(device)
    seed_everything(s["seed"])
    env = build_env(base, s["groups"] * s["group_size"])
    return dev, env, build_policy(base, dev)


def warm_start_of(policy, env, config: RunConfig, log: Callable[[str], Any] = print) -> str | None:
    """Start ``policy`` as ``pcm-run`` does: a policy loaded from a path as it is, otherwise the
    cached SFT warm start when ``train.sft`` is enabled. Returns where its weights came from (None:
    random init)."""
    pretrained = getattr(getattr(policy, "options", None), "path", None)
    if pretrained is not None:
        return str(pretrained)
    if config.train.sft.enabled:
        from pcm_core.warm_start import warm_start

        return str(warm_start(policy, env, config, log=log))
    return None


def make_learner(policy, config: RunConfig) -> Learner:
    """A learner for ``policy`` with the segmenter, proxy and sampler ``config`` names."""
    c = resolve_components(config)
    return Learner(policy, c["segmenter"].build(), c["proxy"].build(), c["sampler"].build(), config.pcm, config.train)


def collect_batch(
    policy, env, groups: int, group_size: int, seed: int, ensure_mixed: bool = True
) -> tuple[RolloutBatch, dict[str, Any]]:
    """One rollout batch of ``groups x group_size`` trajectories from fixed initial states.

    When no group has mixed outcomes (a random-init policy never succeeds), the outcomes are
    relabelled to alternate 1, 0, 1, 0 inside each group, so that advantages and phase scores are
    non-zero; the compute of an update does not depend on the labels. Returns the batch and notes.
    """
    generator = torch.Generator().manual_seed(seed)
    specs = [GroupSpec(g % env.num_tasks, EVAL_INIT_OFFSET // 2 + seed * 100 + g) for g in range(groups)]
    start = time.perf_counter()
    batch = collect(env, policy, specs, group_size, generator)
    notes: dict[str, Any] = {
        "rollout_s": time.perf_counter() - start,
        "trajectories": batch.num_trajectories,
        "chunks_per_trajectory": batch.lengths.tolist(),
        "true_success": batch.rewards.tolist(),
        "relabelled": False,
    }
    mixed = False
    for g in batch.group_index.unique():
        r = batch.rewards[batch.group_index == g]
        mixed |= bool((r.max() > 0.5) and (r.min() < 0.5))
    if ensure_mixed and not mixed:
        batch.rewards = (torch.arange(batch.num_trajectories) % 2 == 0).float()
        notes["relabelled"] = True
    notes["rewards"] = batch.rewards.tolist()
    return batch, notes


def batch_gradient(learner: Learner, batch: CompactBatch) -> torch.Tensor:
    """The gradient of ``learner``'s loss on ``batch`` (the kept chunks), flattened to float64 ``[P]``.

    The weights are not updated; gradients are cleared before and left in ``.grad`` after.
    """
    module = learner.policy.module
    module.zero_grad(set_to_none=True)
    module.train()
    learner.backward(batch)
    module.eval()
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten().double()
                      for p in module.parameters() if p.requires_grad])


def fold_into_keep_probs(learner: Learner, batches: Sequence[RolloutBatch]) -> dict[str, Any]:
    """Score ``batches`` into the learner's keep-probabilities, as training before would have (the
    online mechanism needs a past); returns the resulting state for :func:`masked_gradient`."""
    for past in batches:
        learner.keep_probs.update(learner.proxy.score(past, learner.segmenter.segment(past), learner.segmenter.num_phases))
    return learner.keep_probs.state_dict()


def masked_gradient(
    learner: Learner, batch: RolloutBatch, keep_state: dict[str, Any], seed: int
) -> tuple[SelectionResult, torch.Tensor]:
    """One mask of ``batch``, drawn from the keep-probabilities ``keep_state`` with sampling seed
    ``seed``, and the flat gradient ``[P]`` of its kept chunks (see :func:`batch_gradient`)."""
    learner.keep_probs.load_state_dict(keep_state)
    learner.generator.manual_seed(seed)
    selected = learner.select(batch)
    return selected, batch_gradient(learner, selected.batch)


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (JSON has no inf or NaN: a time to
    a target never reached is written as null)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def write_outputs(out: Path, name: str, payload: dict[str, Any], markdown: str, figure) -> list[Path]:
    """``<name>.json``, ``<name>.md`` and ``<name>.png`` into ``out``, each written to a temporary
    file first and renamed into place, so an interrupted run never leaves a truncated result."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.json", out / f"{name}.md", out / f"{name}.png"]
    text = json.dumps(json_safe(json.loads(json.dumps(payload, default=float))), indent=2, allow_nan=False)
    _replace(paths[0], lambda temp: temp.write_text(text + "\n"))
    _replace(paths[1], lambda temp: temp.write_text(markdown.rstrip() + "\n"))
    _replace(paths[2], lambda temp: figure.savefig(temp, dpi=110, bbox_inches="tight", format="png"))
    import matplotlib.pyplot as plt

    plt.close(figure)
    return paths


def _replace(path: Path, write: Callable[[Path], Any]) -> None:
    """``write`` a hidden temporary sibling of ``path``, then rename it to ``path``."""
    temp = path.with_name(f".{path.name}.tmp")
    write(temp)
    os.replace(temp, path)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt_range(s: dict[str, float], digits: int = 2) -> str:
    """``median (min-max)``."""
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


__all__ = [
    "machine", "stats", "config_for", "build_policy", "build_env", "make_learner", "collect_batch",
    "write_outputs", "table", "fmt_range", "resolve_device", "seed_everything", "train_to_end", "CONFIGS", "QUICK_TRAINING",
]
