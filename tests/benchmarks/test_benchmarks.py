"""Every benchmark runs end to end in its tiny mode and writes JSON + markdown + PNG.

Files, keys and the values that hold exactly in tiny mode (kept chunks, bytes proportional to
them, the algebra between the reported statistics) are checked; timings are never asserted.
"""

import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks import common
from benchmarks.__main__ import main
from pcm_core.config import load_config
from pcm_core.runner import RunResult

EXPECTED_KEYS = {
    "grad_update": ["machine", "settings", "batch", "sizes", "speedup_at_b12"],
    "activation_memory": ["machine", "settings", "runs", "reduction_at_b12"],
    "time_to_success": ["machine", "settings", "runs", "seeds", "summary", "speedup_to_target", "final_success_gap_points",
                        "step_time_ratio", "steps_to_target_ratio", "device"],
    "ablations": ["machine", "settings", "variants", "full_gradient_norm2"],
    "gradient_noise": ["machine", "settings", "variants", "effective_batch_fraction_at_b12"],
    "phase_signal": ["machine", "settings", "device", "warm_start", "batches", "segmenters"],
    "warm_starts": ["machine", "settings", "device", "runs", "seeds", "min_gain_points", "max_entropy_rise"],
}


def kept_at(budget: int | None, trajectories: list[int]) -> int:
    """Chunks PCM keeps of trajectories that all run to the horizon: min(B, T_i) each (all: T_i)."""
    return sum(t if budget is None else min(budget, t) for t in trajectories)


def check_activation_memory(result):
    (run,) = result["runs"]  # the 1m model, one micro-batch size in tiny mode
    lengths = result["batch"]["chunks_per_trajectory"]
    assert lengths == [16, 16, 16, 16]  # 4 trajectories to the 64-step horizon
    configs = run["configs"]
    everything = configs["all"]
    assert everything["kept_chunks"] == 64 and everything["total_bytes"] > 0
    for name, c in configs.items():
        budget = None if name == "all" else int(name.split("@")[1])
        assert c["kept_chunks"] == kept_at(budget, lengths), name
        # saved activations scale with the kept chunks (a few bytes per micro-batch are not per chunk)
        assert c["total_bytes"] == pytest.approx(everything["total_bytes"] * c["kept_chunks"] / 64, rel=1e-3), name
        assert c["peak_bytes"] == c["total_bytes"], name  # micro-batch 64: one forward holds every kept chunk
        assert c["limit"] == pytest.approx(1 - c["kept_chunks"] / 64), name
        assert c["total_reduction"] == pytest.approx(c["limit"], abs=1e-3), name
    assert result["reduction_at_b12"]["value"] == configs["pcm@12"]["total_reduction"]
    assert result["reduction_at_b12"]["limit"] == 0.25


def check_gradient_noise(result):
    variants = result["variants"]
    assert set(variants) == {"all", "pcm@4"}
    assert variants["all"]["kept_fraction"] == 1.0 and variants["pcm@4"]["kept_fraction"] == 0.25  # 4 of 16 chunks
    assert variants["all"]["mask_variance"] == 0.0 and variants["all"]["effective_batch_fraction"] == 1.0
    assert variants["pcm@4"]["mask_variance"] > 0
    for name, v in variants.items():  # effective fraction = batch / (batch + mask), signal-to-noise = signal2 / (batch + mask)
        total = v["batch_variance"] + v["mask_variance"]
        assert v["effective_batch_fraction"] == pytest.approx(v["batch_variance"] / total, rel=1e-12), name
        assert v["signal_to_noise"] == pytest.approx(v["signal2"] / total, rel=1e-12), name
        assert v["effective_batch_fraction"] <= 1.0, name  # (the 2-batch tiny estimate of batch_variance may dip below 0)
        grpo_total = variants["all"]["batch_variance"] + variants["all"]["mask_variance"]
        assert v["grpo_fraction"] == pytest.approx(grpo_total / total, rel=1e-12), name  # GRPO's variance over this one's
    assert variants["all"]["grpo_fraction"] == 1.0


def check_grad_update(result):
    (size,) = result["sizes"].values()
    lengths = result["batch"]["chunks_per_trajectory"]
    for sample in size["samples"]:
        config = sample["config"]
        budget = None if config == "all" else int(config.split("@")[1])
        assert sample["kept_chunks"] == kept_at(budget, lengths), config
    for config, summary in size["summary"].items():
        assert summary["total_s"]["n"] == 1, config  # one repeat in tiny mode


def check_ablations(result):
    budget, trajectories = result["settings"]["budget"], result["settings"]["groups"] * result["settings"]["group_size"]
    assert result["full_gradient_norm2"] > 0
    variants = result["variants"]
    for name, v in variants.items():
        assert v["kept_chunks"] == budget * trajectories, name
        assert sum(v["keep_probs"]) == pytest.approx(1.0, abs=1e-12), name
        # mse = bias^2 + variance, the bias2 estimate having the mean's sampling noise variance / (R - 1) removed
        assert v["mse_rel"] == pytest.approx(v["bias2_rel"] + v["variance_rel"], rel=1e-9), name
    assert variants["no concentration"]["keep_probs"] == pytest.approx([0.25] * 4, abs=1e-15)
    assert variants["sampler topk"]["variance_rel"] == 0.0  # deterministic: every resample keeps the same chunks
    for estimator in ("iw estimator", "stratified estimator"):
        assert variants[estimator]["keep_probs"] == variants["pcm (default)"]["keep_probs"]  # same q, other weights


def check_phase_signal(result):
    reports = result["segmenters"]
    assert set(reports) == {"env", "gripper"}  # the env's labels (the default segmenter) and the label-free one
    assert [p["name"] for p in reports["env"]["phases"]] == ["approach", "align + grasp", "transport + place", "toppled"]
    assert [p["name"] for p in reports["gripper"]["phases"]] == ["0 toggles", "1 toggle", "2 toggles", "3+ toggles"]
    real_chunks = sum(sum(batch["chunks_per_trajectory"]) for batch in result["batches"])
    for name, report in reports.items():
        phases = report["phases"]
        assert sum(p["chunks"] for p in phases) == real_chunks, name  # every real chunk in one phase
        for key in ("chunk_share", "signal_share", "noise_share"):  # shares over the phases
            assert sum(p[key] for p in phases) == pytest.approx(1.0, abs=1e-9), (name, key)
        assert report["decomposition_error"] < 1e-5, name  # the phase gradients add up to the full gradient
        assert all(set(p["push"]) == {"grpo", "pcm masked", "pcm iw", "pcm stratified"} for p in phases), name
        # seq_mean gives each trajectory the weight 1 / N and a group's advantages sum to 0: so do GRPO's pushes
        assert result["loss_aggregation"] == "seq_mean"
        scale = sum(abs(p["push"]["grpo"]) for p in phases)  # float32 advantages and weights: round-off of ~1e-7 each
        assert abs(sum(p["push"]["grpo"] for p in phases)) <= 1e-5 * scale + 1e-12, name
        for p in phases:
            if p["noise"] > 0:
                assert p["signal_to_noise"] == pytest.approx(p["signal"] / p["noise"], rel=1e-12), (name, p["name"])


def check_warm_starts(result):
    (run,) = result["runs"]
    assert result["seeds"] == 1 and run["config"]["train"]["sft"]["seed"] is None  # its own warm start: SFT seed = RL seed
    assert result["min_gain_points"] == pytest.approx(100 * (run["end_success"] - run["start_success"]))
    assert result["max_entropy_rise"] == pytest.approx(run["entropy_last"] - run["entropy_first"])
    assert len(run["curves"]["entropy"]) == run["config"]["train"]["steps"]


VALUE_CHECKS = {
    "warm_starts": check_warm_starts,
    "phase_signal": check_phase_signal,
    "activation_memory": check_activation_memory,
    "gradient_noise": check_gradient_noise,
    "grad_update": check_grad_update,
    "ablations": check_ablations,
}


@pytest.mark.parametrize("name", list(EXPECTED_KEYS))
def test_benchmark_tiny_writes_outputs(name, tmp_path):
    budget = ["--budgets", "3", "--pcm-set", "train.kl_coef=0.01"] if name == "time_to_success" else []  # PCM's B and a lever
    assert main([name, "--quick", "--tiny", *budget, "--out", str(tmp_path)]) == 0
    for suffix in ("json", "md", "png"):
        path = tmp_path / f"{name}.{suffix}"
        assert path.is_file() and path.stat().st_size > 0, path
    result = json.loads((tmp_path / f"{name}.json").read_text())
    for key in EXPECTED_KEYS[name]:
        assert key in result, key
    for key in ("cpu", "cores", "torch"):
        assert key in result["machine"], key
    assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    VALUE_CHECKS.get(name, lambda result: None)(result)
    if name == "ablations":  # every variant is also trained (one seed, one step in tiny mode)
        for variant, measured in result["variants"].items():
            (run,) = measured["training"]["runs"]
            assert 0.0 <= run["warm_start_success"] <= 1.0 and 0.0 <= run["final_success"] <= 1.0, variant
    if name == "phase_signal":  # every table names its phases
        text = (tmp_path / "phase_signal.md").read_text()
        for report in result["segmenters"].values():
            for phase in report["phases"]:
                assert f"| {phase['name']} |" in text, phase["name"]
    if name == "time_to_success":  # PCM runs twice GRPO's steps, both from the warm start of SFT seed = RL seed
        assert {run["method"]: run["steps"] for run in result["runs"]} == {"grpo": 1, "pcm": 2}
        assert {run["config"]["train"]["sft"]["seed"] for run in result["runs"]} == {None} and result["seeds"] == 1
        assert {run["method"]: (run["config"]["pcm"]["sampler"], run["config"]["pcm"]["budget"])
                for run in result["runs"]}["pcm"] == ("pcm", 3)
        assert {run["method"]: run["config"]["train"]["kl_coef"] for run in result["runs"]} == {"grpo": 0.0, "pcm": 0.01}


def test_grad_update_differs_only_in_kept_chunks(tmp_path):
    main(["grad_update", "--quick", "--tiny", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "grad_update.json").read_text())
    summary = result["sizes"]["1m"]["summary"]
    chunks = sum(result["batch"]["chunks_per_trajectory"])
    assert summary["all"]["kept_chunks"] == chunks
    assert summary["pcm@4"]["kept_chunks"] == 4 * len(result["batch"]["chunks_per_trajectory"])


def test_batch_options_reach_both_memory_and_speed_benchmarks():
    from benchmarks import activation_memory, grad_update
    from benchmarks.__main__ import parser

    args = parser().parse_args(["grad_update", "--sizes", "100m,1b", "--groups", "8", "--group-size", "4",
                                "--micro-batch-size", "256", "--dtype", "bfloat16"])
    speed, memory = grad_update.settings(False, args), activation_memory.settings(False, args)
    for s in (speed, memory):
        assert (s["groups"], s["group_size"], s["dtype"], s["sizes"]) == (8, 4, "bfloat16", ["100m", "1b"])
    assert speed["micro_batch_size"] == 256
    assert memory["micro_batch_sizes"] == {"100m": [256], "1b": [256]}
    assert grad_update.settings(False)["dtype"] == "float32"  # the CPU default is unchanged


def test_time_to_success_final_success_averages_the_last_evaluations():
    from benchmarks.time_to_success import final_success, settings, success_at_steps

    curve = [(0, 0.0, 0.1), (5, 10.0, 0.2), (10, 20.0, 0.3), (15, 30.0, 0.7)]  # (step, seconds, success)
    assert final_success(curve, 3) == pytest.approx(0.4)
    assert final_success(curve[:2], 3) == pytest.approx(0.15)
    assert success_at_steps(curve, [5, 15, 20]) == pytest.approx(0.45)
    assert settings(quick=False)["steps"] == {"grpo": 50, "pcm": 100}
    from benchmarks.__main__ import parser

    args = parser().parse_args(["time_to_success", "--budgets", "24", "--pcm-step-ratio", "1.7"])
    assert (settings(False, args)["pcm_budget"], settings(False, args)["steps"]["pcm"]) == (24, 85)
    with pytest.raises(SystemExit, match="one budget"):
        settings(False, parser().parse_args(["time_to_success", "--budgets", "12,24"]))


def test_a_run_stopped_by_a_signal_ends_the_benchmark(monkeypatch):
    stopped = RunResult(run_dir=Path("."), history=[{"step": 3}], stopped=True)
    monkeypatch.setattr(common, "train", lambda *args, **kwargs: stopped)
    with pytest.raises(SystemExit, match="after step 3 of 50; nothing written"):
        common.train_to_end(load_config(None, []))


def test_noise_split_on_a_hand_made_batch():
    from benchmarks.gradient_noise import noise_split, steps_ratio

    # two batches, two masks each, one parameter: batch means 2 and 6
    split = noise_split(torch.tensor([[[1.0], [3.0]], [[5.0], [7.0]]], dtype=torch.float64))
    assert split["mask_variance"] == pytest.approx(2.0)  # (1 + 1 + 1 + 1) / (K (R - 1))
    assert split["batch_variance"] == pytest.approx(7.0)  # Var(2, 6) = 8, minus the means' mask noise 2 / R
    assert split["effective_batch_fraction"] == pytest.approx(7.0 / 9.0)
    assert split["signal2"] == pytest.approx(12.0)  # 4^2 minus the variance of the mean, 8 / K
    assert split["signal_to_noise"] == pytest.approx(12.0 / 9.0)
    assert steps_ratio(0.25) == pytest.approx(2.0)  # a quarter of the information: half the progress per step


def test_phase_signal_estimates_the_signal_without_bias_on_a_hand_made_pair():
    from benchmarks.phase_signal import shares, signal_and_noise

    # two batches of a two-parameter gradient: mean (2, 1), deviations (-1, -1) and (1, 1)
    split = signal_and_noise(torch.tensor([[1.0, 0.0], [3.0, 2.0]], dtype=torch.float64))
    assert split["noise"] == pytest.approx(4.0)  # sum_j Var_b: (1 + 1) / (K - 1) for each of the two parameters
    assert split["signal"] == pytest.approx(3.0)  # ||(2, 1)||^2 = 5, minus the variance of the mean, 4 / K
    assert signal_and_noise(torch.ones(3, 4))["noise"] == 0.0  # equal batches: no noise, the signal is ||g||^2
    assert signal_and_noise(torch.ones(3, 4))["signal"] == pytest.approx(4.0)
    assert shares([3.0, -1.0]) == [1.5, -0.5]  # an estimate below 0 keeps its sign; the shares still sum to 1
    assert all(math.isnan(x) for x in shares([0.0, 0.0]))
    with pytest.raises(ValueError, match="at least 2 batches"):
        signal_and_noise(torch.ones(1, 4))


def test_phase_push_by_hand():
    from types import SimpleNamespace

    from benchmarks.phase_signal import phase_push

    # N = 2, L = 2: trajectory 0 (A = +1) has 4 chunks in phases 0, 0, 1, 1, trajectory 1 (A = -0.5)
    # 2 chunks in phase 1; every chunk kept with its traj_sum weight 1 / (N L T_i)
    def update(keep):
        trajectory, chunk = torch.tensor([t for t, _ in keep]), torch.tensor([c for _, c in keep])
        weights = torch.tensor([1 / 16 if t == 0 else 1 / 8 for t in trajectory.tolist()], dtype=torch.float64)
        return SimpleNamespace(batch=SimpleNamespace(
            advantages=torch.tensor([1.0, -0.5])[trajectory], weights=weights, tokens=torch.zeros(len(keep), 2),
            trajectory=trajectory, chunk=chunk))

    phases = torch.tensor([[0, 0, 1, 1], [1, 1, 0, 0]])
    every = update([(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1)])
    # phase 0: 2 chunks x 1 x 1/8 = 0.25; phase 1: 2 x 1/8 - 2 x 0.5 x 1/4 = 0
    assert phase_push([[every]], [phases], 2) == pytest.approx([0.25, 0.0])
    # two draws of one batch are averaged: the second keeps only trajectory 1 (pushes 0 and -0.25)
    assert phase_push([[every, update([(1, 0), (1, 1)])]], [phases], 2) == pytest.approx([0.125, -0.125])


def test_noise_split_recovers_known_batch_and_mask_noise():
    from benchmarks.gradient_noise import noise_split

    gen = torch.Generator().manual_seed(0)
    batches, masks, params = 8, 3, 20000
    signal = torch.full((params,), 0.5, dtype=torch.float64)
    batch_noise = 1.0 * torch.randn(batches, 1, params, generator=gen, dtype=torch.float64)  # variance 1 per parameter
    mask_noise = 2.0 * torch.randn(batches, masks, params, generator=gen, dtype=torch.float64)  # variance 4
    split = noise_split(signal + batch_noise + mask_noise)
    assert split["batch_variance"] / params == pytest.approx(1.0, rel=0.1)
    assert split["mask_variance"] / params == pytest.approx(4.0, rel=0.02)
    assert split["effective_batch_fraction"] == pytest.approx(0.2, rel=0.1)
    assert split["signal2"] / params == pytest.approx(0.25, rel=0.25)


@settings(max_examples=25, deadline=None)
@given(scale=st.floats(0.01, 100.0), seed=st.integers(0, 2**16))
def test_noise_split_fractions_do_not_depend_on_the_gradient_scale(scale, seed):
    from benchmarks.gradient_noise import noise_split

    grads = torch.randn(3, 2, 5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    plain, scaled = noise_split(grads), noise_split(scale * grads)
    for key in ("effective_batch_fraction", "signal_to_noise"):
        assert scaled[key] == pytest.approx(plain[key], rel=1e-9, abs=1e-12)
    single = noise_split(grads[:, :1])  # one mask per batch (the all sampler): no mask noise
    assert single["mask_variance"] == 0.0 and single["effective_batch_fraction"] == 1.0


def test_gradient_noise_measures_the_given_config(tmp_path):
    config = tmp_path / "mine.yaml"
    config.write_text("pcm:\n  segmenter: progress\ntrain:\n  tasks_per_step: 3\n  group_size: 5\n")
    from benchmarks import gradient_noise
    from benchmarks.__main__ import parser

    full = gradient_noise.settings(False, parser().parse_args(["gradient_noise", "--config", str(config)]))
    assert (full["groups"], full["group_size"]) == (3, 5)  # the config's batch shape
    assert gradient_noise.variant_config(full, "uniform", 7).pcm.segmenter == "progress"
    assert main(["gradient_noise", "--quick", "--tiny", "--config", str(config), "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "gradient_noise.json").read_text())
    assert result["settings"]["config"] == str(config)
    assert set(result["variants"]) == {"all", "pcm@4"}
    assert result["variants"]["all"]["mask_variance"] == 0.0


def test_speedup_to_target_counts_seeds_that_never_reach_the_target():
    from benchmarks.time_to_success import settings, summarize

    def run(method, seed, reached_at, final):  # curve: (step, training seconds, eval success)
        curve = [(0, 0.0, 0.3), (5, 50.0, 0.3), (10, 100.0, 0.3)]
        if reached_at is not None:
            curve[reached_at] = (curve[reached_at][0], curve[reached_at][1], 0.9)
        return {"method": method, "seed": seed, "final_success": final, "curve": curve, "steps": 10,
                "config": {"train": {"eval_episodes": 64}},
                "train_s": 100.0, "median_step_split_s": {name: 1.0 for name in ("rollout", "select", "forward_backward",
                                                                                  "optimizer")}}

    s = {**settings(quick=False), "target": 0.5}
    grpo = [run("grpo", seed, 2, 0.6) for seed in range(3)]  # every seed at 100 s
    one_of_three = summarize([*grpo, run("pcm", 0, 1, 0.6), run("pcm", 1, None, 0.3), run("pcm", 2, None, 0.3)], s)
    assert one_of_three["summary"]["pcm"]["reached"] == 1
    assert one_of_three["speedup_to_target"] == 0.0  # the median PCM seed never got there
    assert one_of_three["speedup_per_seed"] == [2.0, 0.0, 0.0]  # 100 s / 50 s, then PCM never
    two_of_three = summarize([*grpo, run("pcm", 0, 1, 0.6), run("pcm", 1, 1, 0.6), run("pcm", 2, None, 0.3)], s)
    assert two_of_three["speedup_to_target"] == pytest.approx(2.0)  # median 50 s against 100 s
    neither = summarize([run("grpo", 0, None, 0.3), run("pcm", 0, None, 0.3)], {**s, "target": 0.5})
    assert math.isnan(neither["speedup_per_seed"][0])  # no seed reached it: no ratio


def test_speedup_to_target_splits_into_step_time_and_steps_needed():
    from benchmarks.time_to_success import markdown, settings, summarize

    def run(method, steps, curve):  # curve: (step, training seconds, eval success); 100 s of training in all
        return {"method": method, "seed": 0, "final_success": curve[-1][2], "curve": curve, "steps": steps,
                "train_s": 100.0, "config": {"train": {"eval_episodes": 64}, "pcm": {"budget": 12}},
                "median_step_split_s": {name: 1.0 for name in ("rollout", "select", "forward_backward", "optimizer")}}

    grpo = run("grpo", 10, [(0, 0.0, 0.3), (5, 50.0, 0.4), (10, 100.0, 0.6)])  # 10 s a step, the target at step 10
    pcm = run("pcm", 20, [(0, 0.0, 0.3), (5, 25.0, 0.3), (10, 50.0, 0.4), (15, 75.0, 0.6), (20, 100.0, 0.6)])
    s = {**settings(quick=False), "target": 0.5, "steps": {"grpo": 10, "pcm": 20}}
    result = summarize([grpo, pcm], s)
    assert result["step_time_ratio"] == 2.0  # 10 s against 5 s a step
    assert result["steps_to_target_ratio"] == 1.5  # step 15 against step 10
    assert result["speedup_to_target"] == pytest.approx(100.0 / 75.0)  # = 2.0 / 1.5
    text = markdown({**result, "machine": {"cpu": "x", "cores": 2, "torch": "t"}, "device": "cpu", "settings": s})
    assert "PCM needed 1.50x GRPO's steps" in text and "medians over seeds: 15 against 10" in text


def test_quick_runs_never_write_over_the_committed_results(tmp_path):
    from benchmarks.__main__ import DEFAULT_OUT, output_folder, parser

    assert output_folder(parser().parse_args(["grad_update"])) == DEFAULT_OUT
    assert output_folder(parser().parse_args(["grad_update", "--quick"])) == DEFAULT_OUT / "quick"
    assert output_folder(parser().parse_args(["grad_update", "--quick", "--out", str(tmp_path)])) == tmp_path


def test_results_hold_no_value_json_cannot_read(tmp_path):
    import json
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmarks.common import write_outputs

    payload = {"speedup": math.nan, "times": [1.5, math.inf], "nested": {"t": -math.inf}}
    write_outputs(tmp_path, "case", payload, "| a |", plt.figure())
    assert json.loads((tmp_path / "case.json").read_text()) == {"speedup": None, "times": [1.5, None], "nested": {"t": None}}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.json", "case.md", "case.png"]  # no temporary left


def test_warm_starts_pairs_methods_seed_by_seed():
    """Hand-made results of two methods on seeds 0-2: the paired difference and its standard error."""
    from benchmarks.warm_starts import paired

    def result(ends):
        runs = [{"seed": s, "start_success": 0.2, "end_success": e, "gain_points": 100 * (e - 0.2), "entropy_rise": 0.01 * s}
                for s, e in enumerate(ends)]
        return {"runs": runs, "settings": {"config": "c.yaml", "overrides": []}, "machine": {}, "device": "cpu"}

    out = paired({"grpo": result([0.5, 0.3, 0.4]), "pcm": result([0.4, 0.3, 0.2])})
    assert out["seeds"] == [0, 1, 2] and out["reference"] == "grpo"
    diff, se = out["methods"]["pcm"]["end_minus_reference_points"]  # -10, 0, -20 points
    assert diff == pytest.approx(-10.0) and se == pytest.approx(10.0 / 3 ** 0.5)
    assert out["methods"]["grpo"]["gain_points"][0] == pytest.approx(20.0)
    assert out["methods"]["pcm"]["entropy_rise_max"] == pytest.approx(0.02)


def test_warm_starts_read_off_time_to_success_runs():
    """A 10-step PCM run of time_to_success gives the warm_starts row of its first 5 steps."""
    from benchmarks.warm_starts import from_time_to_success

    history = [{"step": k, "success_rate": 0.1 * k, "entropy": 0.5 + 0.01 * k, "kept_chunk_fraction": 0.2} for k in range(1, 11)]
    run = {"method": "pcm", "seed": 3, "curve": [(0, 0.0, 0.25), (5, 40.0, 0.5), (10, 80.0, 0.75)], "history": history,
           "config": {"train": {"eval_episodes": 192, "steps": 10}}}
    result = {"runs": [run, {**run, "method": "grpo"}], "machine": {}, "device": "cpu", "duration_s": 1.0,
              "settings": {"overrides": ["train.eval_every=5", "train.sft.seed=null", "train.eval_episodes=192"],
                           "pcm_overrides": ["train.kl_coef=0.01"]}}
    out = from_time_to_success(result, "pcm", 5)
    (row,) = out["runs"]
    assert (row["seed"], row["start_success"], row["end_success"]) == (3, 0.25, 0.5)
    assert row["gain_points"] == pytest.approx(25.0) and out["min_gain_points"] == pytest.approx(25.0)
    assert row["entropy_first"] == row["entropy_last"] == pytest.approx(0.53)  # steps 1-5 both ways
    assert row["train_s"] == 40.0 and row["config"]["train"]["steps"] == 5 and out["seeds"] == 1
    assert out["settings"]["overrides"] == ["train.eval_episodes=192", "train.kl_coef=0.01"]  # the PCM lever shows
    assert from_time_to_success(result, "grpo", 5)["settings"]["overrides"] == ["train.eval_episodes=192"]
    with pytest.raises(SystemExit, match="no evaluation at step 7"):
        from_time_to_success(result, "pcm", 7)


def test_warm_starts_merges_disjoint_seed_lists():
    from benchmarks.warm_starts import merge

    def result(*gains):
        runs = [{"seed": seed, "gain_points": gain, "entropy_rise": 0.01 * seed, "start_success": 0.3,
                 "end_success": 0.3 + gain / 100} for seed, gain in gains]
        return {"benchmark": "warm_starts", "settings": {"seeds": [s for s, _ in gains]}, "runs": runs, "duration_s": 10.0 * len(runs)}

    merged = merge([result((3, 25.0), (4, 15.0)), result((0, 30.0))])
    assert [r["seed"] for r in merged["runs"]] == [0, 3, 4] and merged["settings"]["seeds"] == [0, 3, 4]
    assert (merged["seeds"], merged["min_gain_points"], merged["max_entropy_rise"]) == (3, 15.0, pytest.approx(0.04))
    assert merged["duration_s"] == 20.0 and merged["merged_from"] == 2
    with pytest.raises(SystemExit, match="share seeds"):
        merge([result((0, 1.0)), result((0, 2.0))])


def test_ablations_merge_pairs_every_variant_with_the_default_seed_by_seed():
    from benchmarks.ablations import merge

    def result(seeds, finals):  # finals: variant -> final success per seed; warm start 0.3 (seed 0), 0.2 (seed 1)
        warm = {0: 0.3, 1: 0.2}
        variants = {name: {"training": {"runs": [{"seed": seed, "warm_start_success": warm[seed], "final_success": f}
                                                 for seed, f in zip(seeds, values)]}} for name, values in finals.items()}
        return {"settings": {"train_seeds": seeds}, "variants": variants, "duration_s": 5.0 * len(seeds)}

    merged = merge([result([1], {"pcm (default)": [0.5], "x": [0.3]}), result([0], {"pcm (default)": [0.5], "x": [0.4]})])
    default, x = merged["variants"]["pcm (default)"]["training"], merged["variants"]["x"]["training"]
    assert merged["settings"]["train_seeds"] == [0, 1] and x["seeds"] == [0, 1]
    assert (default["gain_points"], default["gain_points_se"]) == (pytest.approx(25.0), pytest.approx(5.0))  # gains 20, 30
    assert (x["gain_points"], x["gain_points_se"]) == (pytest.approx(10.0), pytest.approx(0.0))  # gains 10, 10
    assert (x["vs_default_points"], x["vs_default_points_se"]) == (pytest.approx(-15.0), pytest.approx(5.0))  # -10, -20
    assert default["vs_default_points"] == 0.0 and merged["merged_from"] == 2
    with pytest.raises(SystemExit, match="share seeds"):
        merge([result([0], {"pcm (default)": [0.5]}), result([0], {"pcm (default)": [0.6]})])


def test_time_to_success_merges_disjoint_seed_lists():
    from benchmarks.time_to_success import merge, settings

    def run(method, seed):
        return {"method": method, "seed": seed, "final_success": 0.5, "curve": [(0, 0.0, 0.3), (5, 50.0, 0.6)], "steps": 5,
                "config": {"train": {"eval_episodes": 64}}, "train_s": 50.0,
                "median_step_split_s": {name: 1.0 for name in ("rollout", "select", "forward_backward", "optimizer")}}

    def result(seeds):
        return {"settings": {**settings(quick=False), "seeds": seeds}, "machine": {}, "device": "cpu", "duration_s": 9.0,
                "runs": [run(method, seed) for seed in seeds for method in ("grpo", "pcm")]}

    merged = merge([result([0, 2]), result([1])])
    assert merged["seeds"] == 3 and merged["settings"]["seeds"] == [0, 1, 2]
    assert merged["speedup_per_seed"] == [1.0, 1.0, 1.0]
    with pytest.raises(SystemExit, match=r"share \(method, seed\) runs"):
        merge([result([0]), result([0, 1])])


def test_time_to_success_one_method_runs_merge_with_the_other_methods_runs(tmp_path):
    from benchmarks.time_to_success import merge

    for method in ("grpo", "pcm"):
        assert main(["time_to_success", "--quick", "--tiny", "--methods", method, "--out", str(tmp_path / method)]) == 0
    grpo, pcm = (json.loads((tmp_path / m / "time_to_success.json").read_text()) for m in ("grpo", "pcm"))
    assert [run["method"] for run in grpo["runs"]] == ["grpo"] and "speedup_to_target" not in grpo
    assert "pcm runs only" in (tmp_path / "pcm" / "time_to_success.md").read_text()
    merged = merge([grpo, pcm])
    assert merged["seeds"] == 1 and sorted(run["method"] for run in merged["runs"]) == ["grpo", "pcm"]
    assert merged["settings"]["methods"] == ["grpo", "pcm"]
    both = {**pcm, "runs": grpo["runs"] + pcm["runs"]}  # a file holding both methods: take one of them only
    assert [run["method"] for run in merge([both, pcm], ["grpo", "pcm"])["runs"]] == ["grpo", "pcm"]
    with pytest.raises(SystemExit, match=r"share \(method, seed\)"):
        merge([both, pcm])
    with pytest.raises(SystemExit, match="GRPO seeds"):
        merge([pcm])
    with pytest.raises(SystemExit, match="each must be one of"):
        main(["time_to_success", "--tiny", "--methods", "ppo", "--out", str(tmp_path / "x")])


def test_the_merge_commands_name_a_bad_argument(tmp_path, capsys):
    from benchmarks.time_to_success import merge_main as merge_time_to_success
    from benchmarks.warm_starts import merge_main as merge_warm_starts

    missing = str(tmp_path / "missing.json")
    for command, argv, message in [
        (merge_time_to_success, [f"ppo={missing}"], "method 'ppo' in 'ppo=" + missing + "' is not one of grpo, pcm"),
        (merge_time_to_success, [missing], f"no result file '{missing}'"),
        (merge_warm_starts, [missing], f"'{missing}' has no NAME=: write e.g. pcm={missing}"),
        (merge_warm_starts, [f"pcm={tmp_path / 'a.json'},{missing}"], f"no result file '{tmp_path / 'a.json'}'"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            command(argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
