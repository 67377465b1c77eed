"""ManiSkill options are validated without ManiSkill installed: task names, assets, backends."""

from __future__ import annotations

import pytest

from pcm_core.errors import ConfigError
from pcm_maniskill.env import ManiSkillOptions, MissingAssetsError
from pcm_maniskill.tasks import missing_assets


@pytest.fixture
def asset_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MS_ASSET_DIR", str(tmp_path))
    return tmp_path / "data"


def test_ycb_task_without_assets_names_the_asset_and_the_download_command(asset_dir):
    with pytest.raises(MissingAssetsError) as caught:
        ManiSkillOptions(tasks=["PickCube-v1", "PickSingleYCB-v1"])
    first, second = str(caught.value).splitlines()
    assert first == f"ManiSkill task 'PickSingleYCB-v1' needs asset(s) ycb, not found in {asset_dir}."
    assert second.startswith("Fix: python -m mani_skill.utils.download_asset PickSingleYCB-v1")


def test_downloaded_assets_pass(asset_dir):
    ycb = asset_dir / "assets" / "mani_skill2_ycb"
    ycb.mkdir(parents=True)
    assert missing_assets("PickSingleYCB-v1") == ["ycb"]  # an empty folder: what a failed download leaves
    (ycb / "info_pick_v0.json").write_text("{}")
    assert missing_assets("PickClutterYCB-v1") == ["pick_clutter_ycb_configs"]
    assert ManiSkillOptions(tasks=["PickSingleYCB-v1"]).tasks == ["PickSingleYCB-v1"]


def test_tasks_without_downloads_need_nothing(asset_dir):
    assert [missing_assets(t) for t in ("PickCube-v1", "PushCube-v1", "StackCube-v1")] == [[], [], []]


def test_task_without_instruction_suggests_the_close_name():
    with pytest.raises(ConfigError, match="ManiSkill task 'PickCub-v1' has no language instruction.\nFix: did you mean 'PickCube-v1'"):
        ManiSkillOptions(tasks=["PickCub-v1"])
    options = ManiSkillOptions(tasks=["PullCubeTool-v1"], instructions={"PullCubeTool-v1": "use the tool to pull the cube"})
    assert options.instructions == {"PullCubeTool-v1": "use the tool to pull the cube"}


def test_gpu_backend_takes_one_task():
    with pytest.raises(ConfigError, match="physx_cuda runs one task per env batch, got 2"):
        ManiSkillOptions(tasks=["PickCube-v1", "PushCube-v1"], sim_backend="physx_cuda")
    assert ManiSkillOptions(tasks=["PushCube-v1"] * 2, sim_backend="physx_cuda").sim_backend == "physx_cuda"
