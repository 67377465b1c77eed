"""LIBERO's HDF5 demonstrations as SFT data for :func:`pcm_core.warm_start.behaviour_clone`.

Layout of a LIBERO demo file (one task per file): ``data`` with the attribute ``problem_info``
(JSON holding ``language_instruction``) and groups ``data/demo_<n>`` holding ``actions`` ``[T, 7]``
and ``obs/{agentview_rgb, eye_in_hand_rgb}`` ``[T, H, W, 3]`` uint8,
``obs/{ee_pos [T, 3], ee_ori [T, 3], gripper_states [T, 2]}``. OpenVLA-OFT's 8-dim LIBERO proprio
is ``ee_pos ++ ee_ori ++ gripper_states``; LIBERO renders images upside down, which OpenVLA's data
pipeline undoes by rotating them 180 degrees (``flip``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor


NOOP_THRESHOLD = 1e-4
"""A step is a no-op when its first 6 action numbers have a norm below this and the gripper
command repeats the previous one (OpenVLA's ``regenerate_libero_dataset.py``)."""


def noop_steps(actions: np.ndarray, threshold: float = NOOP_THRESHOLD) -> np.ndarray:
    """``[T]`` bool: the no-op steps of one demo's actions ``[T, 7]`` (the first step compares
    with no previous command, so only its motion counts)."""
    still = np.linalg.norm(actions[:, :-1], axis=1) < threshold  # [T]
    same_gripper = np.concatenate([[True], actions[1:, -1] == actions[:-1, -1]])  # [T]
    return still & same_gripper


def load_libero_demos(
    path: str, chunk_size: int, stride: int | None = None, flip: bool = True, drop_noops: bool = True
) -> tuple[dict[str, Tensor], list[str], Tensor]:
    """Chunks of every demo in the HDF5 file ``path``, actions in LIBERO's own units.

    No-op steps are left out first (``drop_noops``, as OpenVLA's LIBERO data and the ``*_no_noops``
    statistics of the published checkpoints were made). A chunk then starts every ``stride`` steps
    (default ``chunk_size``) and holds the next ``chunk_size`` actions, the last action repeated
    past the end of the demo. Actions stay as LIBERO executes them (deltas, gripper -1 open / +1
    close): ``policy.actions_to_tokens`` maps them to the policy's tokens, so an OpenVLA policy with
    ``unnormalize_actions`` and ``gripper: libero`` learns OpenVLA's normalised values and gripper
    labels (1 open, 0 closed), what its ``act`` turns back into these commands.

    Returns observations at the chunk starts (``image``, ``wrist_image`` uint8 ``[S, H, W, 3]``,
    ``proprio`` float32 ``[S, 8]``), the ``S`` instructions and the actions ``[S, K, 7]``.
    """
    import h5py

    stride = stride or chunk_size
    images, wrists, proprios, chunks, texts = [], [], [], [], []
    with h5py.File(path, "r") as file:
        data = file["data"]
        instruction = json.loads(data.attrs["problem_info"])["language_instruction"] if "problem_info" in data.attrs \
            else Path(path).stem.removesuffix("_demo").replace("_", " ")
        for name in sorted(data, key=lambda n: int(n.split("_")[-1])):
            demo = data[name]
            actions = np.asarray(demo["actions"], dtype=np.float32)  # [T, 7]
            steps = np.flatnonzero(~noop_steps(actions)) if drop_noops else np.arange(len(actions))  # [T']
            if steps.size == 0:
                continue
            actions = actions[steps]
            obs = demo["obs"]
            proprio = np.concatenate([obs["ee_pos"], obs["ee_ori"], obs["gripper_states"]], axis=1).astype(np.float32)
            padded = np.concatenate([actions, np.repeat(actions[-1:], chunk_size - 1, axis=0)])
            for t in range(0, len(actions), stride):
                chunks.append(padded[t : t + chunk_size])
                step = int(steps[t])
                image, wrist = obs["agentview_rgb"][step], obs["eye_in_hand_rgb"][step]
                images.append(image[::-1, ::-1] if flip else image)
                wrists.append(wrist[::-1, ::-1] if flip else wrist)
                proprios.append(proprio[step])
                texts.append(instruction)
    obs_out = {
        "image": torch.as_tensor(np.ascontiguousarray(np.stack(images))),
        "wrist_image": torch.as_tensor(np.ascontiguousarray(np.stack(wrists))),
        "proprio": torch.as_tensor(np.stack(proprios)),
    }
    return obs_out, texts, torch.as_tensor(np.stack(chunks))  # actions [S, K, 7]
