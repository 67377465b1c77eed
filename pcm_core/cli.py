"""``pcm-run``: validate a run config, list plugins, train.

Every user error ends with exit code 2 and at most two lines on stderr (problem, then fix).
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer
import yaml
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from pcm_core.config import render_type
from pcm_core.errors import PcmError
from pcm_core.presets import check_machine

FILE_SYSTEM_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOTDIR, errno.EISDIR,
                      errno.EDQUOT, errno.ENAMETOOLONG}
"""OSErrors that mean "this path cannot be written": two lines for the user instead of a traceback."""

app = typer.Typer(
    add_completion=False,
    invoke_without_command=True,
    no_args_is_help=False,
    pretty_exceptions_enable=False,
    help="Fine-tune VLA policies with GRPO + Probabilistic Chunk Masking.",
)
out = Console()
err = Console(stderr=True, highlight=False, soft_wrap=True)


@app.callback()
def run(
    ctx: typer.Context,
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML run config (overrides the defaults)."),
    env: Optional[str] = typer.Option(None, "--env", help="Environment backend, e.g. tabletop, libero."),
    policy: Optional[str] = typer.Option(None, "--policy", help="Policy backend, e.g. tinyvla, openvla."),
    overrides: list[str] = typer.Option([], "--set", help="Override a config key: --set pcm.budget=12 (repeatable)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate everything, print the resolved config, build nothing."),
    resume: Optional[str] = typer.Option(
        None, "--resume", help="Continue a run: 'latest' (newest under train.output_dir), a run folder or a checkpoint. "
        "Its saved config is used; --set still overrides (e.g. train.steps)."
    ),
    nproc: int = typer.Option(
        1, "--nproc", min=1, help="Learner processes on this machine: launches torchrun (one per GPU; gloo on CPU)."
    ),
    rollout_workers: Optional[int] = typer.Option(
        None, "--rollout-workers", min=0, help="Ray rollout actors (needs the \\[distributed] extra); same as "
        "--set distributed.rollout_workers=N."
    ),
) -> None:
    """Train on the embedded default, or on what --config / --env / --policy name."""
    if ctx.invoked_subcommand is not None:
        return
    from pcm_core.distributed import check_ranks
    from pcm_core.memory import check_memory
    from pcm_core.ray_rollouts import require_ray

    if rollout_workers is not None:
        overrides = [*overrides, f"distributed.rollout_workers={rollout_workers}"]

    preset, saved, resolved_config, components = _resolve(config, env, policy, overrides, resume)
    check_memory(resolved_config, components)
    check_ranks(resolved_config, nproc if nproc > 1 else int(os.environ.get("WORLD_SIZE", "1")))
    require_ray(resolved_config.distributed.rollout_workers)  # here, not after the warm start
    if dry_run:
        text = yaml.safe_dump(resolved_config.model_dump(mode="json"), sort_keys=False).rstrip()
        out.print(text, markup=False, highlight=False, soft_wrap=True)
        names = ", ".join(f"{kind}={c.name}" for kind, c in components.items())
        out.print(f"config valid: {names}", markup=False, highlight=False, soft_wrap=True)
        return
    check_machine(preset)
    if nproc > 1:
        from pcm_core.launch import torchrun

        options = {"--config": config, "--env": env, "--policy": policy, "--resume": resume}
        args = [arg for name, value in options.items() if value is not None for arg in (name, str(value))]
        sys.exit(torchrun(nproc, [*args, *(arg for text in overrides for arg in ("--set", text))]))
    from pcm_core.runner import train

    train(resolved_config, components, console=out, resume=saved)


@app.command("eval")
def eval_command(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML run config (overrides the defaults)."),
    env: Optional[str] = typer.Option(None, "--env", help="Environment backend, e.g. tabletop, libero."),
    policy: Optional[str] = typer.Option(None, "--policy", help="Policy backend, e.g. tinyvla, openvla-oft."),
    overrides: list[str] = typer.Option([], "--set", help="Override a config key, e.g. --set evaluation.tasks=[0,1] (repeatable)."),
    resume: Optional[str] = typer.Option(
        None, "--resume", help="Evaluate a run's checkpoint: 'latest', a run folder or a checkpoint (its saved config is used)."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate everything and print the episodes it would run."),
) -> None:
    """Evaluate a policy: every task x evaluation.episodes_per_task initial states (LIBERO: the
    published 50 per task), greedy; per-task success with Wilson 95% intervals in eval.md and
    eval.json, MP4s per task, the environment fingerprint, and the trackers."""
    preset, saved, resolved_config, components = _resolve(config, env, policy, overrides, resume)
    settings = resolved_config.evaluation
    if dry_run:
        tasks = "every task" if settings.tasks is None else f"tasks {settings.tasks}"
        out.print(f"eval valid: {tasks} x {settings.episodes_per_task} episodes, "
                  f"{'greedy' if settings.greedy else 'sampled'}, env={resolved_config.env.name}, "
                  f"policy={resolved_config.policy.name}", markup=False, highlight=False, soft_wrap=True)
        return
    check_machine(preset)
    from pcm_core.evaluation import evaluate_command

    evaluate_command(resolved_config, components, out, resume=saved)


def _resolve(config: Optional[Path], env: Optional[str], policy: Optional[str], overrides: list[str],
             resume: Optional[str]) -> tuple[Any, Any, Any, dict[str, Any]]:
    """(preset, checkpoint, config, components) of a command line: the config file, the pair's
    preset or a resumed run's saved config, with ``--env``/``--policy``/``--set`` on top; every
    component and tracker checked."""
    from pcm_core.config import load_config, resolve_components, resolve_trackers

    preset = _preset(config, env, policy, resume)
    resolved = load_config(preset.config if preset else config, overrides, env=env, policy=policy)
    saved = None
    if resume is not None:
        from pcm_core import checkpoint

        saved = checkpoint.load(checkpoint.locate(resume, resolved.train.output_dir))
        assert saved.path is not None
        resolved = load_config(saved.path / checkpoint.CONFIG, overrides, env=env, policy=policy)
    components = resolve_components(resolved)
    resolve_trackers(resolved.tracking)
    return preset, saved, resolved, components


def _preset(config: Optional[Path], env: Optional[str], policy: Optional[str], resume: Optional[str]) -> Any:
    """The preset of ``--env`` + ``--policy`` when no ``--config`` (or ``--resume``) is given; says which it took."""
    if config is not None or resume is not None or env is None or policy is None:
        return None
    from pcm_core.registry import get_registry

    preset = get_registry().presets.get((env, policy))
    if preset is not None:
        out.print(f"preset: {preset.name} ({preset.config}); --set overrides it", markup=False, highlight=False, soft_wrap=True)
    return preset


def _describe_options(options: type[BaseModel]) -> str:
    lines = []
    for name, field in options.model_fields.items():
        annotation = render_type(field.annotation)
        default = "required" if field.is_required() else repr(field.get_default(call_default_factory=True))
        description = f" — {field.description}" if field.description else ""
        lines.append(f"{name}: {annotation} = {default}{description}")
    return "\n".join(lines) or "(no options)"


@app.command()
def plugins() -> None:
    """List installed components by kind, their options and providers; then what is missing or broken."""
    from pcm_core.interfaces import KINDS
    from pcm_core.registry import get_registry

    registry = get_registry()
    for kind in KINDS:
        table = Table(title=KINDS[kind].plural, title_justify="left", show_lines=True)
        table.add_column("name", style="bold")
        table.add_column("options")
        table.add_column("provided by")
        for name, registration in registry.components(kind).items():
            described = _describe_options(registration.cls.Options)
            phases = getattr(registration.cls, "phase_names", None)
            if isinstance(phases, (tuple, list)):  # an env naming its phase labels
                described += "\nphase labels: " + ", ".join(f"{k} {n}" for k, n in enumerate(phases))
            table.add_row(name, described, registration.distribution)
        out.print(table)
    missing = registry.missing_backends()
    if missing:
        out.print("[bold]known backends not installed[/bold]")
        for kind, name, extra in missing:
            out.print(f'  {kind} {name}: pip install "pcm-vla[{extra}]"', markup=False)
    if registry.duplicates:
        out.print("[bold]names registered twice[/bold]")
        for message in registry.duplicates:
            out.print(f"  {message}", markup=False, soft_wrap=True)
    if registry.broken:
        out.print("[bold red]broken plugins[/bold red]")
        for broken in registry.broken:
            out.print(f"  {broken.plugin} ({broken.distribution}): BROKEN — {broken.error}", markup=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> Any:
    """Console-script entry point: one or two plain lines and exit code 2 on any user error."""
    try:
        result = app(args=argv, standalone_mode=False)
        if result == 130:  # typer turns KeyboardInterrupt (a second Ctrl-C) into this exit code
            err.print("pcm-run: interrupted", markup=False)
            sys.exit(130)
        return result
    except KeyboardInterrupt:
        err.print("pcm-run: interrupted", markup=False)
        sys.exit(130)
    except PcmError as exc:
        for line in str(exc).splitlines()[:2]:
            err.print(f"pcm-run: {line}" if not line.startswith("Fix:") else line, markup=False)
        sys.exit(exc.exit_code)
    except OSError as exc:  # a folder the run writes to (artifacts, videos, the policy) is missing, read-only or full
        if exc.errno not in FILE_SYSTEM_ERRNOS:
            raise
        from pcm_core.errors import WRITE_FIX

        where = f" '{exc.filename}'" if exc.filename else ""
        err.print(f"pcm-run: cannot write{where}: {exc.strerror}", markup=False)
        err.print(WRITE_FIX, markup=False)
        sys.exit(2)
    except Exception as exc:
        # click's usage errors (typer vendors its own click, so match by behaviour)
        if type(exc).__name__ == "Abort":
            err.print("pcm-run: aborted", markup=False)
            sys.exit(130)
        if not hasattr(exc, "format_message"):
            raise
        err.print(f"pcm-run: {exc.format_message()}", markup=False)
        err.print("Fix: see `pcm-run --help`", markup=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
