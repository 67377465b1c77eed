"""Fixtures: a tiny checkpoint folder (built once per session) and tabletop-sized observations."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> str:
    from tiny_checkpoint import make_folder

    return make_folder(tmp_path_factory.mktemp("tiny-openvla"))


@pytest.fixture
def obs() -> dict[str, torch.Tensor]:
    """Three 64x64 observations (the tabletop env's size) with a 5-number proprio vector."""
    generator = torch.Generator().manual_seed(0)
    return {
        "image": torch.randint(0, 256, (3, 64, 64, 3), dtype=torch.uint8, generator=generator),
        "proprio": torch.rand(3, 5, generator=generator) * 2 - 1,
    }
