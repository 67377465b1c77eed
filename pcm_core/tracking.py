"""MLflow tracking with a local store by default; mlflow is imported only when a run starts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from pcm_core.config import TrackingConfig

DEFAULT_STORE = "mlruns"
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0.5", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
"""Short HTTP retries/timeouts (unless the user set them), so a dead server costs seconds, not minutes."""


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
    """Params, per-step metrics and artifacts of one run. Disabled trackers do nothing.

    Training never waits on tracking: the first failing MLflow call prints one warning and turns
    the tracker offline; from then on metrics are only buffered. :meth:`end` tries once to send
    the buffer to the server, and otherwise writes the whole run (params and every metric) into
    a local SQLite MLflow store, ``<local_dir>/mlflow.db``.
    """

    def __init__(self, config: TrackingConfig, local_dir: str | Path | None = None, log: Callable[[str], None] = print) -> None:
        self.config = config
        self.local_dir = Path(local_dir) if local_dir is not None else None
        self.log = log
        self.run_id: str | None = None
        self.uri: str | None = None
        self.offline = False
        self._mlflow: Any = None
        self._client: Any = None
        self._params: dict[str, str] = {}
        self._logged: list[tuple[dict[str, float], int]] = []  # every metric row, for the local store
        self._pending: list[tuple[dict[str, float], int]] = []  # rows the server has not received

    def start(self, params: dict[str, Any], run_id: str | None = None) -> None:
        """Start a new MLflow run, or continue ``run_id`` (params are then not logged again)."""
        if not self.config.enabled:
            return
        import logging

        import mlflow

        logging.getLogger("mlflow").setLevel(logging.ERROR)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        for name, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(name, value)
        self._mlflow = mlflow
        self._params = {k: str(v)[:500] for k, v in flatten(params).items()}
        self.uri = self.config.uri or default_tracking_uri()
        self.run_id = run_id
        try:
            self._client = mlflow.tracking.MlflowClient(tracking_uri=self.uri)
            if run_id is not None:
                self._client.update_run(run_id, status="RUNNING")
                return
            experiment = self._client.get_experiment_by_name(self.config.experiment)
            if experiment is None:
                artifacts = None
                if self.uri.startswith("sqlite:///") and not os.environ.get("MLFLOW_TRACKING_URI"):
                    artifacts = (Path(DEFAULT_STORE).resolve() / "artifacts").as_uri()
                experiment_id = self._client.create_experiment(self.config.experiment, artifact_location=artifacts)
            else:
                experiment_id = experiment.experiment_id
            run = self._client.create_run(experiment_id, run_name=self.config.run_name)
            self.run_id = run.info.run_id
            params = [mlflow.entities.Param(k, v) for k, v in self._params.items()]
            for first in range(0, len(params), 100):
                self._client.log_batch(self.run_id, params=params[first : first + 100])
        except Exception as exc:  # noqa: BLE001 - any tracking failure must not stop training
            self._go_offline(exc)

    def _go_offline(self, exc: Exception) -> None:
        if not self.offline:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            self.log(
                f"warning: MLflow tracking at {self.uri} failed ({type(exc).__name__}: {first}); "
                "training goes on, metrics are kept locally"
            )
        self.offline = True

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self._mlflow is None:
            return
        row = ({k: float(v) for k, v in metrics.items()}, step)
        self._logged.append(row)
        if self.offline:
            self._pending.append(row)
            return
        try:
            self._client.log_batch(self.run_id, metrics=_metric_objects(*row))
        except Exception as exc:  # noqa: BLE001
            self._pending.append(row)
            self._go_offline(exc)

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        if self._mlflow is None or self.offline:
            return
        try:
            if Path(path).is_dir():
                self._client.log_artifacts(self.run_id, str(path), artifact_path=folder)
            else:
                self._client.log_artifact(self.run_id, str(path), artifact_path=folder)
        except Exception as exc:  # noqa: BLE001
            self._go_offline(exc)

    def end(self, status: str = "FINISHED") -> None:
        """Finish the run with ``status``; never raises, so on a crash the training error is the one
        that reaches the user."""
        if self._mlflow is None:
            return
        self._mlflow = None
        if self.offline and self.run_id is not None:
            try:  # the server may be back: one attempt to send what it missed
                for metrics, step in self._pending:
                    self._client.log_batch(self.run_id, metrics=_metric_objects(metrics, step))
                self._pending = []
                self.offline = False
            except Exception:  # noqa: BLE001
                pass
        if not self.offline and self.run_id is not None:
            try:
                self._client.set_terminated(self.run_id, status=status)
                return
            except Exception as exc:  # noqa: BLE001
                self._go_offline(exc)
        try:
            self._write_local(status)
        except Exception as exc:  # noqa: BLE001 - a tracking failure must not replace the run's own outcome
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            self.log(f"warning: metrics of this run were not tracked: the local MLflow store failed ({type(exc).__name__}: {first})")

    def _write_local(self, status: str) -> None:
        """The whole run into ``<local_dir>/mlflow.db`` (a SQLite MLflow store)."""
        if self.local_dir is None:
            self.log("warning: metrics of this run were not tracked (no local store)")
            return
        import mlflow

        self.local_dir.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{(self.local_dir / 'mlflow.db').resolve()}"
        client = mlflow.tracking.MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name(self.config.experiment)
        experiment_id = experiment.experiment_id if experiment is not None else client.create_experiment(
            self.config.experiment, artifact_location=(self.local_dir / "artifacts").resolve().as_uri()
        )
        tags = {"pcm.unreachable_tracking_uri": str(self.uri)}
        if self.run_id:
            tags["pcm.original_run_id"] = self.run_id
        run = client.create_run(experiment_id, run_name=self.config.run_name, tags=tags)
        params = [mlflow.entities.Param(k, v) for k, v in self._params.items()]
        for start in range(0, len(params), 100):
            client.log_batch(run.info.run_id, params=params[start : start + 100])
        for metrics, step in self._logged:
            client.log_batch(run.info.run_id, metrics=_metric_objects(metrics, step))
        client.set_terminated(run.info.run_id, status=status)
        self.uri, self.run_id = uri, run.info.run_id
        self.log(f"metrics written to the local MLflow store {uri}")

    def ui_command(self) -> str | None:
        if self.uri is None:
            return None
        return f"mlflow ui --backend-store-uri {self.uri}"


def _metric_objects(metrics: dict[str, float], step: int) -> list[Any]:
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(key, value, now, step) for key, value in metrics.items()]
