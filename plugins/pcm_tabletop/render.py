"""Vectorised top-down rasteriser for the tabletop scene (pure numpy, no simulator).

The table spans ``[-1, 1]`` in x (image columns, left to right) and y (image rows, bottom to
top). Every shape is tested against the pixel-centre grid of all ``B`` envs at once, so one frame
of a batch costs a few dozen whole-array numpy operations, independent of ``B`` in Python terms.

Drawing order: table, target plates (discs), resting blocks, lifted blocks, gripper. Heights are
shown with a pinhole-like scale (a shape at height ``z`` is drawn ``1 + z`` times larger), the
gripper jaws are white when open and black when closed, and a dot between the jaws gets brighter
as the gripper rises.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TABLE_COLOR = (196, 184, 160)
OBJECT_COLORS = ((220, 40, 40), (235, 200, 30), (140, 60, 190))
"""Block colours: red, yellow, purple."""
TARGET_COLORS = ((70, 170, 80), (60, 110, 210))
"""Plate colours: green, blue."""
JAW_OPEN_COLOR = (250, 250, 250)
JAW_CLOSED_COLOR = (20, 20, 20)
HEIGHT_LEVELS = 16
"""Grey levels of the gripper's height dot."""

TABLE = 0
TARGET_0 = 1
OBJECT_0 = TARGET_0 + len(TARGET_COLORS)
JAW_OPEN = OBJECT_0 + len(OBJECT_COLORS)
JAW_CLOSED = JAW_OPEN + 1
DOT_0 = JAW_CLOSED + 1
PALETTE = np.array(
    [TABLE_COLOR, *TARGET_COLORS, *OBJECT_COLORS, JAW_OPEN_COLOR, JAW_CLOSED_COLOR]
    + [(g, g, g) for g in np.linspace(40, 255, HEIGHT_LEVELS).astype(int)],
    dtype=np.uint8,
)
"""``[labels, 3]`` colour of each label; shapes are painted as labels, then looked up once."""


@dataclass
class Scene:
    """Geometry of ``B`` scenes, everything in table units.

    Attributes:
        obj_xy: ``[B, O, 2]`` block centres.
        obj_z: ``[B, O]`` block heights (0 on the table).
        obj_yaw: ``[B, O]`` block yaw (radians, long axis from the x axis).
        target_xy: ``[B, T, 2]`` plate centres.
        grip_xyz: ``[B, 3]`` gripper position.
        grip_yaw: ``[B]`` gripper yaw.
        closed: ``[B]`` bool, gripper closed.
    """

    obj_xy: np.ndarray
    obj_z: np.ndarray
    obj_yaw: np.ndarray
    target_xy: np.ndarray
    grip_xyz: np.ndarray
    grip_yaw: np.ndarray
    closed: np.ndarray


@dataclass(frozen=True)
class Geometry:
    """Sizes in table units (the table is 2 x 2) and the gripper's height range."""

    block_length: float
    block_width: float
    target_radius: float
    jaw_length: float
    jaw_width: float
    jaw_gap_open: float
    jaw_gap_closed: float
    max_height: float


def pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates: ``x`` ``[1, 1, W]`` and ``y`` ``[1, H, 1]`` (float32, H = W = size)."""
    centres = (np.arange(size, dtype=np.float32) + 0.5) * (2.0 / size) - 1.0
    return centres[None, None, :], -centres[None, :, None]


def _rect_mask(
    gx: np.ndarray,
    gy: np.ndarray,
    cx: np.ndarray,
    cy: np.ndarray,
    yaw: np.ndarray,
    half_l: np.ndarray | float,
    half_w: np.ndarray | float,
) -> np.ndarray:
    """``[B, H, W]`` pixels inside rotated rectangles with centres ``cx, cy`` ``[B]``, yaw ``[B]``
    and half extents ``half_l`` (along yaw) and ``half_w`` (across), each ``[B]`` or scalar."""
    c = np.cos(yaw).astype(np.float32)[:, None, None]
    s = np.sin(yaw).astype(np.float32)[:, None, None]
    dx = gx - cx.astype(np.float32)[:, None, None]  # [B, 1, W]
    dy = gy - cy.astype(np.float32)[:, None, None]  # [B, H, 1]
    u = dx * c + dy * s  # along the long axis  [B, H, W]
    v = dy * c - dx * s  # across  [B, H, W]
    half_l = np.broadcast_to(np.asarray(half_l, dtype=np.float32), cx.shape)[:, None, None]
    half_w = np.broadcast_to(np.asarray(half_w, dtype=np.float32), cx.shape)[:, None, None]
    return (np.abs(u) <= half_l) & (np.abs(v) <= half_w)


def _disc_mask(
    gx: np.ndarray, gy: np.ndarray, cx: np.ndarray, cy: np.ndarray, radius: np.ndarray | float
) -> np.ndarray:
    """``[B, H, W]`` pixels inside discs with centres ``cx, cy`` ``[B]`` and ``radius`` (``[B]`` or scalar)."""
    dx = gx - cx.astype(np.float32)[:, None, None]
    dy = gy - cy.astype(np.float32)[:, None, None]
    r = np.broadcast_to(np.asarray(radius, dtype=np.float32), cx.shape)[:, None, None]
    return dx * dx + dy * dy <= r * r


def render_scenes(scene: Scene, geometry: Geometry, size: int) -> np.ndarray:
    """Draw ``B`` scenes. Returns uint8 ``[B, size, size, 3]``."""
    gx, gy = pixel_grid(size)
    batch, num_objects = scene.obj_z.shape
    label = np.full((batch, size, size), TABLE, dtype=np.uint8)  # palette index per pixel  [B, H, W]
    for k in range(scene.target_xy.shape[1]):
        mask = _disc_mask(gx, gy, scene.target_xy[:, k, 0], scene.target_xy[:, k, 1], geometry.target_radius)
        np.copyto(label, np.uint8(TARGET_0 + k), where=mask)
    lifted = scene.obj_z > 0  # [B, O]
    masks = []
    for k in range(num_objects):
        scale = 1.0 + scene.obj_z[:, k]
        masks.append(
            _rect_mask(
                gx,
                gy,
                scene.obj_xy[:, k, 0],
                scene.obj_xy[:, k, 1],
                scene.obj_yaw[:, k],
                0.5 * geometry.block_length * scale,
                0.5 * geometry.block_width * scale,
            )
        )
    for k in range(num_objects):
        np.copyto(label, np.uint8(OBJECT_0 + k), where=masks[k] & ~lifted[:, k, None, None])
    for k in np.flatnonzero(lifted.any(axis=0)):  # lifted blocks cover resting ones
        np.copyto(label, np.uint8(OBJECT_0 + k), where=masks[k] & lifted[:, k, None, None])
    _draw_gripper(label, gx, gy, scene, geometry)
    return np.take(PALETTE, label, axis=0)


def _draw_gripper(label: np.ndarray, gx: np.ndarray, gy: np.ndarray, scene: Scene, geometry: Geometry) -> None:
    """Paint into ``label`` ``[B, H, W]``: two jaws parallel to the gripper yaw, offset across it by
    the opening, and a dot whose grey level shows the height."""
    x, y, z = scene.grip_xyz[:, 0], scene.grip_xyz[:, 1], scene.grip_xyz[:, 2]
    scale = 1.0 + z
    gap = np.where(scene.closed, geometry.jaw_gap_closed, geometry.jaw_gap_open) * scale  # centre-to-jaw  [B]
    across_x, across_y = -np.sin(scene.grip_yaw), np.cos(scene.grip_yaw)  # unit vector across the jaws
    jaw = np.where(scene.closed, JAW_CLOSED, JAW_OPEN).astype(np.uint8)[:, None, None]  # [B, 1, 1]
    for side in (-1.0, 1.0):
        mask = _rect_mask(
            gx,
            gy,
            x + side * gap * across_x,
            y + side * gap * across_y,
            scene.grip_yaw,
            0.5 * geometry.jaw_length * scale,
            0.5 * geometry.jaw_width * scale,
        )
        np.copyto(label, jaw, where=mask)
    level = np.clip(z / geometry.max_height, 0.0, 1.0) * (HEIGHT_LEVELS - 1)  # [B]
    dot = (DOT_0 + np.rint(level)).astype(np.uint8)[:, None, None]  # [B, 1, 1]
    np.copyto(label, dot, where=_disc_mask(gx, gy, x, y, 0.5 * geometry.jaw_width * scale))
