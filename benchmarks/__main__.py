"""``python -m benchmarks <name> [--quick] [--device cpu|cuda] [--out DIR]``."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from benchmarks import BACKEND_BENCHMARKS, BENCHMARKS

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
"""Where full runs write; ``--quick`` runs write to its ``quick/`` folder (git ignores it), so
they never overwrite the committed results."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description="GRPO vs PCM side by side")
    p.add_argument("name", choices=[*BENCHMARKS, *BACKEND_BENCHMARKS, "all"])
    p.add_argument("--quick", action="store_true", help="small settings: under 5 minutes on 2 cores, except "
                   "distributed_scaling (~8 min) and libero_env_throughput (456 s), per benchmarks/README.md")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    p.add_argument("--out", type=Path, help="folder for <name>.json/.md/.png (default benchmarks/results/, "
                   "with --quick benchmarks/results/quick/)")
    p.add_argument("--sizes", help="comma-separated tinyvla sizes (1m,25m,100m,1b) instead of the defaults")
    p.add_argument("--groups", type=int, help="grad_update, activation_memory, gradient_noise: groups in the batch "
                   "(default 2; gradient_noise 8 or the config's)")
    p.add_argument("--group-size", type=int, help="grad_update, activation_memory, gradient_noise: trajectories per "
                   "group (default 2; gradient_noise 8 or the config's)")
    p.add_argument("--micro-batch-size", type=int, help="grad_update, activation_memory: chunks per micro-batch "
                   "(default 64; activation_memory also 256 for 1m)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], help="grad_update, activation_memory: "
                   "autocast dtype on CUDA (train.dtype; default float32)")
    p.add_argument("--config", type=Path, help="gradient_noise, warm_starts: a pcm-run YAML config to measure instead of the embedded default")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="warm_starts: a config override, as pcm-run's --set (repeatable)")
    p.add_argument("--pcm-set", action="append", metavar="KEY=VALUE", help="time_to_success: a config override for "
                   "the PCM runs only, a lever measured against plain GRPO (repeatable)")
    p.add_argument("--methods", help="time_to_success: comma-separated methods to run (default grpo,pcm); one alone "
                   "writes its runs, to pair with the other's by python -m benchmarks.time_to_success grpo=A.json pcm=B.json")
    p.add_argument("--seed-list", help="warm_starts, time_to_success, ablations: comma-separated seeds instead of 0..seeds-1")
    p.add_argument("--budgets", help="grad_update: comma-separated budgets B for every size instead of the defaults; "
                   "gradient_noise: pcm at these B instead of its variants; time_to_success: PCM's one B (default 12)")
    p.add_argument("--repeats", type=int, help="repeats per configuration instead of the defaults")
    p.add_argument("--max-steps", type=int, help="episode length in env steps (256 = 64 chunks of 4)")
    p.add_argument("--seeds", type=int, help="time_to_success / ablations: seeds per method")
    p.add_argument("--steps", type=int, help="time_to_success, ablations: RL steps per training run (ablations: 0 skips training)")
    p.add_argument("--pcm-step-ratio", type=float, help="time_to_success: PCM runs this many times GRPO's steps "
                   "(default 2: about GRPO's wall-clock on this machine)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: on a shared 2-core "
                   "machine, 2 threads under contention ran 12x slower than 1)")
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # tests: smallest possible run
    return p


def output_folder(args: argparse.Namespace) -> Path:
    """``--out``, else ``DEFAULT_OUT`` for a full run and its ``quick/`` folder for a quick one."""
    if args.out is not None:
        return args.out
    return DEFAULT_OUT / "quick" if args.quick or args.tiny else DEFAULT_OUT


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # progress lines reach a log file (nohup, CI) as they happen
    import torch

    torch.set_num_threads(args.threads)
    out = output_folder(args)
    names = BENCHMARKS if args.name == "all" else (args.name,)
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        module.run(args.quick, args.device, out, args)
        print(f"wrote {out / name}.json/.md/.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
