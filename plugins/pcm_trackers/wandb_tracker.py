"""Weights & Biases, offline by default: the run goes to ``<run>/wandb`` and ``wandb sync`` uploads it."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from pcm_core.interfaces import Options, TrackerBackend

WANDB_STATUS_EXIT_CODES = {"FINISHED": 0, "KILLED": 1, "FAILED": 1}


class WandbTracker(TrackerBackend):
    """Step metrics as W&B history, the resolved config as the run config (the environment
    fingerprint under ``fingerprint``), artifacts saved into the run's files, videos as
    ``wandb.Video``. A resumed pcm-vla run continues the same W&B run."""

    requires = ("wandb",)
    extra = "wandb"

    class Options(Options):
        mode: Literal["offline", "online", "disabled"] = Field(
            "offline", description="offline needs no network or account: upload later with `wandb sync <run>/wandb/offline-run-*`"
        )
        project: str | None = Field(None, description="W&B project; None: tracking.experiment")
        entity: str | None = Field(None, description="W&B team or user (online)")

    run: Any = None

    def start(self, params: dict[str, str], tags: dict[str, str], resume_id: str | None) -> None:
        import wandb

        self.run = wandb.init(
            mode=self.options.mode,
            project=self.options.project or self.settings.experiment,
            entity=self.options.entity,
            name=self.settings.run_name or self.run_dir.name,
            dir=str(self.run_dir),
            id=resume_id,
            resume="allow" if resume_id else None,
            config={**params, "fingerprint": tags},
            settings=wandb.Settings(silent=True, console="off", save_code=False),
            reinit="create_new",
        )
        self.run_id = self.run.id

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(dict(metrics), step=step)

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        """Files are copied into the run's ``files`` folder (folders, e.g. the policy, stay in the run folder)."""
        if path.is_file():
            target = Path(self.run.dir) / (folder or "") / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            self.run.save(str(target), base_path=self.run.dir, policy="now")

    def log_video(self, path: Path, step: int) -> None:
        """Under ``videos/<name without the step>``, so one episode's videos line up over training."""
        import wandb

        key = re.sub(r"_?step\d+", "", path.stem)
        self.run.log({f"videos/{key}": wandb.Video(str(path), format="mp4")}, step=step)

    def end(self, status: str) -> None:
        if self.run is not None:
            self.run.finish(exit_code=WANDB_STATUS_EXIT_CODES.get(status, 1))
            self.run = None
