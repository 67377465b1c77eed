"""OpenVLA-OFT at the published 7B size: one PCM update (B = 12) against one GRPO update (all chunks).

``python -m benchmarks.openvla_7b --device cuda`` builds a randomly initialised ``openvla-oft``
of the real shapes (bf16 weights, LoRA rank 32, gradient checkpointing) on the GPU, a synthetic
rollout batch of ``groups x group_size`` trajectories of ``chunks`` chunks (random 224x224 images,
8-dim proprio, mixed outcomes, behaviour log-probs from the same policy), and times
``Learner.update`` for the ``all`` and ``pcm`` samplers on the same batch, interleaved, recording
the CUDA peak memory of each. ``--architecture tiny --device cpu`` runs the same code path in
seconds (tests). Writes ``openvla_7b.json`` and ``.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import EXACT_BUDGET, config_for, machine, make_learner
from pcm_core.profiling import StepTimer
from pcm_core.types import RolloutBatch

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def build_policy(architecture: str, device: str):
    from pcm_openvla.policy import OpenVLAOFTPolicy

    options = OpenVLAOFTPolicy.Options(
        architecture=architecture, init_device=device, weights_dtype="bfloat16" if device == "cuda" else "float32",
        lora={"rank": 32, "alpha": 16}, gradient_checkpointing=True, chunk_size=8,
        image_keys=["image"],  # one camera, as the committed results were measured (LIBERO's OFT reads two)
    )
    return OpenVLAOFTPolicy(options)


def synthetic_batch(policy, trajectories: int, chunks: int, image_size: int, seed: int) -> RolloutBatch:
    """``trajectories`` x ``chunks`` chunks with random observations; tokens and behaviour
    log-probs sampled from ``policy`` on the first chunk's observation of each trajectory."""
    generator = torch.Generator().manual_seed(seed)
    n, t, length = trajectories, chunks, policy.tokens_per_chunk
    obs = {
        "image": torch.randint(0, 256, (n, t, image_size, image_size, 3), dtype=torch.uint8, generator=generator),
        "proprio": torch.rand(n, t, 8, generator=generator) * 2 - 1,
    }
    instructions = ["pick up the black bowl and place it on the plate"] * n
    tokens, old = torch.empty(n, t, length, dtype=torch.long), torch.empty(n, t, length)
    with torch.no_grad(), torch.autocast(policy.device.type, torch.bfloat16, enabled=policy.device.type == "cuda"):
        for step in range(t):
            out = policy.act({k: v[:, step].to(policy.device) for k, v in obs.items()}, instructions, generator)
            tokens[:, step], old[:, step] = out.tokens.cpu(), out.logprobs.float().cpu()
    actions = policy.tokens.to_actions(tokens).reshape(n, t, 8, 7)
    return RolloutBatch(
        obs=obs, instructions=instructions, actions=actions, tokens=tokens, old_logprobs=old,
        entropy=torch.zeros(n, t), lengths=torch.full((n,), t), rewards=(torch.arange(n) % 2).float(),
        group_index=torch.arange(n) // 2, info={},
    )


def update(learner, batch, device) -> dict[str, float]:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    timer = StepTimer()
    metrics = learner.update(batch, timer)
    result = {name: timer.seconds.get(name, 0.0) for name in ("select", "forward_backward", "optimizer")}
    result["total"] = sum(result.values())
    result["kept_chunks"] = metrics["kept_chunks"]
    result["cuda_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    policy = build_policy(args.architecture, args.device)
    device = policy.device
    batch = synthetic_batch(policy, args.groups * 2, args.chunks, args.image_size, seed=0)
    overrides = [f"train.micro_batch_size={args.micro_batch_size}", f"train.dtype={args.dtype}", "train.lr=1e-5",
                 "pcm.segmenter=gripper"]  # synthetic batches carry no env phase labels
    learners = {"grpo": make_learner(policy, config_for("all", args.budget, None, overrides=overrides)),
                "pcm": make_learner(policy, config_for("pcm", args.budget, None, overrides=[*overrides, *EXACT_BUDGET]))}
    learners["pcm"].optimizer = learners["grpo"].optimizer  # same AdamW: identical optimizer work
    update(learners["pcm"], batch, device)  # warm-up: AdamW state, allocator, kernels
    samples: dict[str, list[dict[str, float]]] = {"grpo": [], "pcm": []}
    for repeat in range(args.repeats):
        for name in (("grpo", "pcm") if repeat % 2 == 0 else ("pcm", "grpo")):
            samples[name].append(update(learners[name], batch, device))
            print(f"r{repeat} {name}: {samples[name][-1]}", flush=True)
    median = {name: statistics.median(s["total"] for s in rows) for name, rows in samples.items()}
    return {
        "machine": machine(), "device": str(device), "architecture": args.architecture,
        "parameters": sum(p.numel() for p in policy.module.parameters()),
        "trainable_parameters": sum(p.numel() for p in policy.module.parameters() if p.requires_grad),
        "settings": vars(args) | {"out": str(args.out)}, "samples": samples,
        "median_update_s": median, "speedup": median["grpo"] / median["pcm"],
        "cuda_peak_gib": {name: max(s["cuda_peak_gib"] for s in rows) for name, rows in samples.items()},
    }


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    gpu = result["machine"].get("gpu", "no GPU")
    rows = [f"| {name} | {int(result['samples'][name][0]['kept_chunks'])} | {result['median_update_s'][name]:.2f} | "
            f"{result['cuda_peak_gib'][name]:.1f} |" for name in ("grpo", "pcm")]
    return "\n".join([
        f"# openvla_7b: OpenVLA-OFT ({result['parameters'] / 1e9:.2f}B parameters, "
        f"{result['trainable_parameters'] / 1e6:.1f}M LoRA), one update, GRPO vs PCM B={s['budget']}",
        "", f"Device: {gpu} ({result['device']}); {s['groups'] * 2} trajectories x {s['chunks']} chunks of "
        f"8 actions; micro-batch {s['micro_batch_size']}; {s['dtype']} autocast on CUDA, gradient checkpointing; "
        f"median of {s['repeats']} interleaved repeats.", "",
        "| config | kept chunks | update s | CUDA peak GiB |", "| --- | --- | --- | --- |", *rows, "",
        f"**speedup** {result['speedup']:.2f}x (limit {s['chunks'] / s['budget']:.2f}x)", "",
    ])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.openvla_7b", description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    p.add_argument("--architecture", default="7b", choices=["7b", "tiny"])
    p.add_argument("--groups", type=int, default=2, help="groups of 2 trajectories")
    p.add_argument("--chunks", type=int, default=64, help="chunks per trajectory (T)")
    p.add_argument("--budget", type=int, default=12, help="PCM budget B")
    p.add_argument("--micro-batch-size", type=int, default=8)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    result = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "openvla_7b.json").write_text(json.dumps(result, indent=2, default=str))
    (args.out / "openvla_7b.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
