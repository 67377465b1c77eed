"""End-to-end: `pcm-run` on the embedded default with tiny settings (well under a minute)."""

import mlflow
import pytest

from pcm_core.cli import main

METRICS = [
    "success_rate",
    "eval_success_rate",
    "mixed_group_fraction",
    "kept_chunk_fraction",
    "keep_prob/phase_0",
    "score/phase_0",
    "time/rollout_s",
    "time/rollout_policy_s",
    "time/select_s",
    "time/forward_backward_s",
    "time/optimizer_s",
    "saved_activation_bytes",
]


@pytest.fixture
def tiny_run_args(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return uri, [
        "--set", "train.steps=2",
        "--set", "train.tasks_per_step=2",
        "--set", "train.group_size=2",
        "--set", "train.eval_episodes=4",
        "--set", "train.eval_every=1",
        "--set", "train.sft.demos=4",
        "--set", "train.sft.epochs=1",
        "--set", f"train.sft.cache_dir={tmp_path / 'cache'}",
        "--set", f"train.output_dir={tmp_path / 'runs'}",
        "--set", f"tracking.uri={uri}",
        "--set", "env.options.max_steps=64",
        "--set", "pcm.budget=4",
    ]


def test_pcm_run_end_to_end(tiny_run_args, tmp_path):
    uri, args = tiny_run_args
    main(args)

    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs(client.get_experiment_by_name("pcm-vla").experiment_id)
    assert run.info.status == "FINISHED"
    for name in METRICS:
        assert name in run.data.metrics, name
    assert 0 < run.data.metrics["time/rollout_policy_s"] < run.data.metrics["time/rollout_s"]  # the env takes the rest
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "kept_chunk_fraction")]
    assert steps == [1, 2]
    # 16 chunks per trajectory (64 steps / K=4), budget 4 -> exactly a quarter kept
    assert run.data.metrics["kept_chunk_fraction"] == pytest.approx(4 / 16)
    assert run.data.params["pcm.budget"] == "4"
    assert "align + grasp" in run.data.params["phase_names"]  # the env's names for the default env segmenter

    (run_dir,) = (tmp_path / "runs").iterdir()
    for name in ("config.yaml", "keep_probabilities.png", "success.png", "policy"):
        assert (run_dir / name).exists(), name
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "keep_probabilities.png", "success.png", "policy"} <= artifacts


def test_progress_reaches_a_log_file_one_line_per_step(tiny_run_args, tmp_path):
    import re
    import subprocess
    import sys

    _, args = tiny_run_args
    log = tmp_path / "run.log"
    with log.open("w") as stdout:  # not a terminal: plain lines instead of the live bar
        subprocess.run([sys.executable, "-m", "pcm_core.cli", *args, "--set", "train.steps=3", "--set", "tracking.enabled=false"],
                       stdout=stdout, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, check=True, timeout=300)
    lines = [line for line in log.read_text().splitlines() if line.startswith("step ")]
    pattern = r"step (\d)/3  success \d\.\d\d  eval \d\.\d\d  kept \d\.\d\d  \d+\.\d s/step  ETA \d+m \d+s"
    assert [re.fullmatch(pattern, line).group(1) for line in lines] == ["1", "2", "3"], lines
