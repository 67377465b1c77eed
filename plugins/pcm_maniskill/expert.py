"""A scripted PickCube-v1 expert in this backend's action convention (gripper +1 closes)."""

from __future__ import annotations

from typing import Any

import numpy as np

EXPERT_TASKS = ("PickCube-v1",)
HOVER = 0.05
"""Height above the cube (m) at which the gripper lines up before descending."""
ALIGN_TOLERANCE = 0.01
"""Horizontal TCP-to-cube distance (m) under which the gripper descends."""
STEP = 0.1
"""End-effector travel (m) of ``pd_ee_delta_pose`` at action 1."""


def pick_cube_actions(sim: Any) -> np.ndarray:
    """``[n, 7]`` actions for the ``n`` envs of a PickCube-v1 ManiSkill env.

    Per env: holding the cube, carry it to the goal with the gripper closed; otherwise fly to
    ``HOVER`` above the cube, descend once within ``ALIGN_TOLERANCE`` of it horizontally and close
    at cube height. Translation is proportional (``error / STEP``, clipped); rotation stays 0.
    """
    env = sim.unwrapped
    tcp = env.agent.tcp.pose.p.cpu().numpy()  # [n, 3]
    cube = env.cube.pose.p.cpu().numpy()  # [n, 3]
    goal = env.goal_site.pose.p.cpu().numpy()  # [n, 3]
    grasped = env.agent.is_grasping(env.cube).cpu().numpy()  # [n]
    aligned = np.linalg.norm(tcp[:, :2] - cube[:, :2], axis=1) <= ALIGN_TOLERANCE
    low = tcp[:, 2] <= cube[:, 2] + 0.005
    target = np.where(aligned[:, None], cube, cube + np.array([0.0, 0.0, HOVER]))
    target = np.where((aligned & low)[:, None], tcp, target)
    target = np.where(grasped[:, None], goal, target)
    close = grasped | (aligned & low)
    action = np.zeros((tcp.shape[0], 7), dtype=np.float32)
    action[:, :3] = np.clip((target - tcp) / STEP, -1.0, 1.0)
    action[:, 6] = np.where(close, 1.0, -1.0)
    return action
