"""What the backend knows about ManiSkill3 (mani-skill 3.0.1) tasks without importing it:
language instructions and the downloadable assets each task needs."""

from __future__ import annotations

import os
from pathlib import Path

INSTRUCTIONS = {
    "PickCube-v1": "pick up the red cube and move it to the goal position",
    "PushCube-v1": "push the blue cube onto the target",
    "PullCube-v1": "pull the cube onto the target",
    "PokeCube-v1": "use the peg to poke the cube onto the target",
    "StackCube-v1": "stack the red cube on top of the green cube",
    "LiftPegUpright-v1": "lift the peg and stand it upright",
    "PegInsertionSide-v1": "insert the peg into the hole in the box",
    "PlugCharger-v1": "plug the charger into the receptacle",
    "PlaceSphere-v1": "place the sphere into the bin",
    "RollBall-v1": "roll the ball to the goal region",
    "PushT-v1": "push the T-shaped block onto the target",
    "PickSingleYCB-v1": "pick up the object and move it to the goal position",
    "PickClutterYCB-v1": "pick up the target object from the clutter and move it to the goal position",
}
"""Task id -> instruction of the tasks with a built-in one (others need ``instructions``)."""

TASK_ASSETS: dict[str, tuple[tuple[str, str], ...]] = {
    "AssemblingKits-v1": (("assembling_kits", "tasks/assembling_kits"),),
    "InsertFlower-v1": (("oakink-v2", "tasks/oakink-v2"),),
    "OpenCabinetDrawer-v1": (("partnet_mobility_cabinet", "partnet_mobility/dataset"),),
    "PickClutterYCB-v1": (("ycb", "assets/mani_skill2_ycb"), ("pick_clutter_ycb_configs", "tasks/pick_clutter")),
    "PickSingleYCB-v1": (("ycb", "assets/mani_skill2_ycb"),),
    "PutCarrotOnPlateInScene-v1": (("bridge_v2_real2sim", "tasks/bridge_v2_real2sim_dataset"),),
    "PutEggplantInBasketScene-v1": (("bridge_v2_real2sim", "tasks/bridge_v2_real2sim_dataset"),),
    "PutSpoonOnTableClothInScene-v1": (("bridge_v2_real2sim", "tasks/bridge_v2_real2sim_dataset"),),
    "RoboCasaKitchen-v1": (("RoboCasa", "scene_datasets/robocasa_dataset"),),
    "RotateSingleObjectInHandLevel2-v1": (("ycb", "assets/mani_skill2_ycb"),),
    "RotateSingleObjectInHandLevel3-v1": (("ycb", "assets/mani_skill2_ycb"),),
    "StackGreenCubeOnYellowCubeBakedTexInScene-v1": (("bridge_v2_real2sim", "tasks/bridge_v2_real2sim_dataset"),),
    "TurnFaucet-v1": (("partnet_mobility_faucet", "partnet_mobility/dataset"),),
}
"""Task id -> (asset id, folder under the asset directory) of every task that declares asset
downloads in mani-skill 3.0.1 (``tests/maniskill`` checks this against ManiSkill's registry)."""


def asset_dir() -> Path:
    """Where ManiSkill keeps downloaded assets: ``$MS_ASSET_DIR/data`` (default ``~/.maniskill/data``)."""
    return Path(os.environ.get("MS_ASSET_DIR", Path.home() / ".maniskill")) / "data"


def missing_assets(task: str) -> list[str]:
    """Asset ids ``task`` needs whose folder in :func:`asset_dir` is absent or empty (a failed
    ManiSkill download leaves an empty one behind). Empty when nothing is missing."""
    root = asset_dir()
    return [asset for asset, folder in TASK_ASSETS.get(task, ()) if not _has_files(root / folder)]


def _has_files(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())
