"""Two runs that start together on a new SQLite MLflow store both log to it (schema creation is
serialised by a lock file beside the database)."""

from __future__ import annotations

import subprocess
import sys

import mlflow


def test_two_fresh_runs_share_a_new_sqlite_store(tiny_args, tmp_path):
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    runs = [
        subprocess.Popen([sys.executable, "-m", "pcm_core.cli", *tiny_args(tmp_path / f"runs{i}", "train.steps=1", tracking=uri)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
        for i in range(2)
    ]
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    assert not any("warning: MLflow" in output or "local MLflow store" in output for output in outputs), outputs
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    found = client.search_runs(client.get_experiment_by_name("pcm-vla").experiment_id)
    assert sorted(run.info.status for run in found) == ["FINISHED", "FINISHED"]
