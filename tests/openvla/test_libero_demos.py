"""LIBERO HDF5 demonstrations -> SFT chunks -> behaviour cloning of a tiny openvla-oft."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pcm_openvla.libero_demos import load_libero_demos, noop_steps

pytestmark = pytest.mark.openvla
h5py = pytest.importorskip("h5py")


def write_demo_file(path) -> None:
    """Two demos (5 and 3 steps) in LIBERO's layout, with numbers that identify step and demo.

    Demo 0 starts with a no-op (no motion, first step) and the gripper closes at step 3."""
    with h5py.File(path, "w") as file:
        data = file.create_group("data")
        data.attrs["problem_info"] = json.dumps({"language_instruction": "put the bowl on the plate"})
        for n, steps in enumerate([5, 3]):
            demo = data.create_group(f"demo_{n}")
            demo["actions"] = np.array([[0.1 * t + n, 0, 0, 0, 0, 0, 1 if t >= 3 else -1] for t in range(steps)], np.float32)
            obs = demo.create_group("obs")
            image = np.zeros((steps, 8, 8, 3), np.uint8)
            image[:, 0, 0] = np.arange(steps)[:, None] + 10 * n  # top-left pixel = 10 n + t
            obs["agentview_rgb"] = image
            obs["eye_in_hand_rgb"] = image + 100
            obs["ee_pos"] = np.full((steps, 3), n, np.float32)
            obs["ee_ori"] = np.arange(steps, dtype=np.float32)[:, None].repeat(3, 1)
            obs["gripper_states"] = np.full((steps, 2), 0.04, np.float32)


def test_noop_steps_on_hand_made_actions():
    actions = np.zeros((6, 7), np.float32)
    actions[:, 6] = [-1, -1, -1, 1, 1, -1]
    actions[1, 0] = 0.5  # moves
    actions[4, 2] = 5e-5  # below the threshold
    # first step still; moves; still + same gripper; gripper closes; still; gripper opens
    assert noop_steps(actions).tolist() == [True, False, True, False, True, False]


def test_demos_become_chunks_with_hand_checkable_numbers(tmp_path):
    write_demo_file(tmp_path / "demo.hdf5")
    obs, texts, actions = load_libero_demos(str(tmp_path / "demo.hdf5"), chunk_size=2)
    assert actions.shape == (4, 2, 7)  # demo 0: its no-op step 0 left out, starts at steps 1, 3; demo 1: 0, 2
    assert texts == ["put the bowl on the plate"] * 4
    expected = torch.tensor([[0.1, 0.2], [0.3, 0.4], [1.0, 1.1], [1.2, 1.2]])  # LIBERO's units, last repeated
    torch.testing.assert_close(actions[:, :, 0], expected)
    assert actions[:, :, 6].tolist() == [[-1, -1], [1, 1], [-1, -1], [-1, -1]]  # -1 open, +1 close, as recorded
    assert obs["image"][:, -1, -1, 0].tolist() == [1, 3, 10, 12]  # rotated 180 degrees, at the kept steps
    assert obs["wrist_image"][:, -1, -1, 0].tolist() == [101, 103, 110, 112]
    assert obs["proprio"].shape == (4, 8)
    assert obs["proprio"][1].tolist() == pytest.approx([0, 0, 0, 3, 3, 3, 0.04, 0.04])
    _, _, every = load_libero_demos(str(tmp_path / "demo.hdf5"), chunk_size=2, drop_noops=False)
    assert every.shape == (5, 2, 7)


def test_behaviour_cloning_on_demos_lowers_the_token_loss(tmp_path, tiny_folder):
    from pcm_core.warm_start import behaviour_clone
    from pcm_openvla.policy import OpenVLAOFTPolicy

    write_demo_file(tmp_path / "demo.hdf5")
    obs, texts, actions = load_libero_demos(str(tmp_path / "demo.hdf5"), chunk_size=2)
    policy = OpenVLAOFTPolicy(
        OpenVLAOFTPolicy.Options(
            path=tiny_folder, chunk_size=2, unnorm_key="tabletop", unnormalize_actions=True, gripper="libero",
            image_keys=["image"],
        )
    )
    targets = policy.actions_to_tokens(actions)
    before = -policy.log_probs(obs, texts, targets).mean().item()
    behaviour_clone(policy, obs, texts, actions, epochs=10, lr=3e-3, batch_size=5, seed=0)
    with torch.no_grad():
        after = -policy.log_probs(obs, texts, targets).mean().item()
    assert before > 5.0 and after < before - 0.5, (before, after)  # ln 256 = 5.55 at the start
