"""Tracking: one :class:`Tracker` per run fans out to the enabled backends (``tracking.backends``).

MLflow is the default and lives here (a local store by default; mlflow is imported only when a
run starts). TensorBoard and W&B come with the built-in ``pcm_trackers`` plugin; third-party
packages add their own through the ``pcm_register_trackers`` hook.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Any, Callable, Iterator

from pcm_core.config import TrackingConfig, resolve_trackers
from pcm_core.interfaces import Options, TrackerBackend

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


@contextlib.contextmanager
def sqlite_first_use(uri: str) -> Iterator[None]:
    """For a ``sqlite:///`` store, an exclusive ``flock`` on ``<db>.lock`` while it is opened: two
    runs starting together on a new store would otherwise both create its schema, and one fail."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    database = Path(uri[len("sqlite:///") :])
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(database.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Tracker:
    """Params, per-step metrics, artifacts and videos of one run, sent to every enabled backend.

    A backend's first failure prints one warning and switches that backend off for the rest of
    the run; the others go on. MLflow handles its own failures (see :class:`MLflowTracker`).
    """

    def __init__(self, config: TrackingConfig, run_dir: Path, log: Callable[[str], None] = print) -> None:
        self.log = log
        self.backends: dict[str, TrackerBackend] = {
            resolved.name: resolved.build(settings=config, run_dir=run_dir, log=log) for resolved in resolve_trackers(config)
        }

    @property
    def mlflow(self) -> "MLflowTracker | None":
        return next((b for b in self.backends.values() if isinstance(b, MLflowTracker)), None)

    @property
    def run_id(self) -> str | None:
        """The MLflow run id (None without MLflow)."""
        return self.mlflow.run_id if self.mlflow else None

    @property
    def uri(self) -> str | None:
        return self.mlflow.uri if self.mlflow else None

    @property
    def run_ids(self) -> dict[str, str]:
        """Each started backend's run id by name, what a checkpoint keeps so a resume continues them."""
        return {name: b.run_id for name, b in self.backends.items() if b.run_id is not None}

    def _each(self, call: Callable[[str, TrackerBackend], Any]) -> None:
        for name, backend in list(self.backends.items()):
            try:
                call(name, backend)
            except Exception as exc:  # noqa: BLE001 - a tracker must never stop training
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                self.log(f"warning: tracker {name} failed ({type(exc).__name__}: {first}); training goes on without it")
                del self.backends[name]

    def start(self, params: dict[str, Any], tags: dict[str, str] | None = None, run_ids: dict[str, str] | None = None) -> None:
        """Open the run in every backend: ``params`` (nested; flattened to ``a.b`` keys), the
        environment fingerprint ``tags``, and the ``run_ids`` of a resumed run."""
        flat = {k: str(v)[:500] for k, v in flatten(params).items()}
        self._each(lambda name, b: b.start(flat, dict(tags or {}), (run_ids or {}).get(name)))

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self._each(lambda name, b: b.log_metrics(metrics, step))

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        self._each(lambda name, b: b.log_artifact(Path(path), folder))

    def log_video(self, path: Path, step: int) -> None:
        self._each(lambda name, b: b.log_video(path, step))

    def end(self, status: str = "FINISHED") -> None:
        """Close every backend; never raises, so on a crash the training error is the one that
        reaches the user. A second call does nothing."""
        self._each(lambda name, b: b.end(status))
        self.backends = {}

    def ui_command(self) -> str | None:
        return self.mlflow.ui_command() if self.mlflow else None


class MLflowTracker(TrackerBackend):
    """MLflow: params, tags, per-step metrics, artifacts and videos of one run.

    Training never waits on tracking: the first failing MLflow call prints one warning and turns
    the tracker offline; from then on metrics are only buffered. :meth:`end` tries once to send
    the buffer to the server, and otherwise writes the whole run (params and every metric) into
    a local SQLite MLflow store, ``<local_dir>/mlflow.db``.
    """

    def __init__(self, options: Options, settings: TrackingConfig, run_dir: Path | None, log: Callable[[str], None] = print) -> None:
        super().__init__(options, settings, run_dir, log)
        self.config = settings
        self.local_dir = run_dir / "mlruns" if run_dir is not None else None
        self.run_id: str | None = None
        self.uri: str | None = None
        self.offline = False
        self._mlflow: Any = None
        self._client: Any = None
        self._params: dict[str, str] = {}
        self._tags: dict[str, str] = {}
        self._logged: list[tuple[dict[str, float], int]] = []  # every metric row, for the local store
        self._pending: list[tuple[dict[str, float], int]] = []  # rows the server has not received

    def start(self, params: dict[str, str], tags: dict[str, str], resume_id: str | None) -> None:
        """Start a new MLflow run, or continue ``resume_id`` (params are then not logged again)."""
        import logging

        import mlflow

        logging.getLogger("mlflow").setLevel(logging.ERROR)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        for name, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(name, value)
        self._mlflow = mlflow
        self._params, self._tags = params, {f"pcm.{k}": v[:5000] for k, v in tags.items()}
        self.run_id = resume_id
        try:
            self.uri = self.config.uri or default_tracking_uri()  # may create ./mlruns: inside the guarded block
            with sqlite_first_use(self.uri):
                self._client = mlflow.tracking.MlflowClient(tracking_uri=self.uri)
                self._client.search_experiments(max_results=1)  # creates the schema of a new store
            if resume_id is not None:
                self._client.update_run(resume_id, status="RUNNING")
                return
            experiment = self._client.get_experiment_by_name(self.config.experiment)
            if experiment is None:
                artifacts = None
                if self.uri.startswith("sqlite:///") and not os.environ.get("MLFLOW_TRACKING_URI"):
                    artifacts = (Path(DEFAULT_STORE).resolve() / "artifacts").as_uri()
                experiment_id = self._client.create_experiment(self.config.experiment, artifact_location=artifacts)
            else:
                experiment_id = experiment.experiment_id
            run = self._client.create_run(experiment_id, run_name=self.config.run_name, tags=self._tags)
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

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
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
        tags = {**self._tags, "pcm.unreachable_tracking_uri": str(self.uri)}
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
