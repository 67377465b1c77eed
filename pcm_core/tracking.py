"""MLflow tracking with a local store by default; mlflow is imported only when a run starts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pcm_core.config import TrackingConfig

DEFAULT_STORE = "mlruns"


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` or a SQLite store inside ``./mlruns``."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    store = Path(DEFAULT_STORE).resolve()
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store / 'mlflow.db'}"


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"pcm": {"budget": 12}}`` -> ``{"pcm.budget": 12}``."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


class Tracker:
    """Params, per-step metrics and artifacts of one run. Disabled trackers do nothing."""

    def __init__(self, config: TrackingConfig) -> None:
        self.config = config
        self.run_id: str | None = None
        self.uri: str | None = None
        self._mlflow: Any = None

    def start(self, params: dict[str, Any]) -> None:
        if not self.config.enabled:
            return
        import logging

        import mlflow

        logging.getLogger("mlflow").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        self._mlflow = mlflow
        self.uri = self.config.uri or default_tracking_uri()
        mlflow.set_tracking_uri(self.uri)
        experiment = mlflow.get_experiment_by_name(self.config.experiment)
        if experiment is None:
            artifacts = None
            if self.uri.startswith("sqlite:///") and not os.environ.get("MLFLOW_TRACKING_URI"):
                artifacts = (Path(DEFAULT_STORE).resolve() / "artifacts").as_uri()
            experiment_id = mlflow.create_experiment(self.config.experiment, artifact_location=artifacts)
        else:
            experiment_id = experiment.experiment_id
        run = mlflow.start_run(experiment_id=experiment_id, run_name=self.config.run_name)
        self.run_id = run.info.run_id
        mlflow.log_params({k: str(v)[:500] for k, v in flatten(params).items()})

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self._mlflow is not None:
            self._mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        if self._mlflow is None:
            return
        if Path(path).is_dir():
            self._mlflow.log_artifacts(str(path), artifact_path=folder)
        else:
            self._mlflow.log_artifact(str(path), artifact_path=folder)

    def end(self, status: str = "FINISHED") -> None:
        if self._mlflow is not None:
            self._mlflow.end_run(status=status)
            self._mlflow = None

    def ui_command(self) -> str | None:
        if self.uri is None:
            return None
        return f"mlflow ui --backend-store-uri {self.uri}"
