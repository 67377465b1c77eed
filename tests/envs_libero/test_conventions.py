"""LIBERO conventions that need no simulator: axis-angle proprio and phase labels (default suite)."""

from __future__ import annotations

import numpy as np
import pytest

from pcm_libero.env import PHASES, phase_label, quat_to_axis_angle
from pcm_libero.suites import MAX_STEPS


def test_axis_angle_of_hand_made_quaternions():
    # identity (x, y, z, w) = (0, 0, 0, 1): no rotation
    np.testing.assert_allclose(quat_to_axis_angle(np.array([0.0, 0.0, 0.0, 1.0])), [0.0, 0.0, 0.0])
    # a half turn about x: (1, 0, 0, 0) -> pi about x
    np.testing.assert_allclose(quat_to_axis_angle(np.array([1.0, 0.0, 0.0, 0.0])), [np.pi, 0.0, 0.0], atol=1e-12)
    # 90 degrees about z: (0, 0, sin 45, cos 45) -> pi/2 about z
    s = np.sqrt(0.5)
    np.testing.assert_allclose(quat_to_axis_angle(np.array([0.0, 0.0, s, s])), [0.0, 0.0, np.pi / 2], atol=1e-12)


def test_axis_angle_leaves_its_input_alone():
    quat = np.array([0.0, 0.0, 0.0, 1.0000001])  # w slightly above 1, as float noise gives
    quat_to_axis_angle(quat)
    assert quat[3] == 1.0000001


@pytest.mark.parametrize(
    "grasping, lifted, held, expected",
    [(False, False, 0, 0), (True, False, 0, 1), (True, True, 0, 2), (False, False, 1, 3), (True, True, 1, 2), (True, False, 2, 1)],
)
def test_phase_labels(grasping, lifted, held, expected):
    assert phase_label(grasping, lifted, held) == expected
    assert len(PHASES) == 4


def test_published_episode_limits():
    assert MAX_STEPS == {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520, "libero_90": 400}
