"""TensorBoard: scalars per step in ``<run>/tensorboard`` (``tensorboard --logdir runs``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from pcm_core.interfaces import Options, TrackerBackend


class TensorBoardTracker(TrackerBackend):
    """Every step metric as a scalar; the resolved config and the environment fingerprint as text.

    TensorBoard has no place for files, so artifacts and videos stay in the run folder.
    """

    requires = ("tensorboard",)
    extra = "tensorboard"

    class Options(Options):
        log_dir: str | None = Field(None, description="event-file folder; None: <run folder>/tensorboard")

    writer: Any = None

    def start(self, params: dict[str, str], tags: dict[str, str], resume_id: str | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        folder = Path(self.options.log_dir).expanduser() if self.options.log_dir else self.run_dir / "tensorboard"
        self.writer = SummaryWriter(log_dir=str(folder))
        self.run_id = str(folder)
        if resume_id is None:
            self.writer.add_text("config", _markdown_table(params))
            self.writer.add_text("fingerprint", _markdown_table(tags))

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, global_step=step)

    def end(self, status: str) -> None:
        if self.writer is not None:
            self.writer.add_text("status", status)
            self.writer.close()
            self.writer = None


def _markdown_table(values: dict[str, str]) -> str:
    rows = "\n".join(f"| {key} | {value} |" for key, value in sorted(values.items()))
    return f"| key | value |\n|---|---|\n{rows}"
