"""Reading and writing OpenVLA checkpoint folders in the published layout.

A folder holds ``config.json``, the weights as ``model.safetensors`` or as shards
``model-0000i-of-0000n.safetensors`` with ``model.safetensors.index.json``, the tokenizer files,
``dataset_statistics.json`` (the ``norm_stats``), and for OpenVLA-OFT the component files
``proprio_projector--<step>_checkpoint.pt`` / ``action_head--<step>_checkpoint.pt`` (plain
state dicts, read with ``torch.load(weights_only=True)``). Hub ids are fetched with
``huggingface_hub.snapshot_download``; no code from a checkpoint is ever executed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import torch
from torch import Tensor

from pcm_core.errors import ConfigError

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
STATS_FILE = "dataset_statistics.json"
WEIGHT_PATTERNS = ("*.json", "*.safetensors", "tokenizer.model", "*_checkpoint.pt", "*.py", "*.txt")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class CheckpointFolderError(ConfigError):
    """A checkpoint folder or hub id that cannot be used (one line, then the fix)."""


def resolve(path: str) -> Path:
    """A local folder for ``path``: the folder itself, or the hub snapshot of a hub id."""
    local = Path(path).expanduser()
    if local.exists():
        if not local.is_dir():
            raise CheckpointFolderError(
                f"policy path '{path}' is a file, not a checkpoint folder.\n"
                "Fix: set policy.options.path to the folder holding config.json and the safetensors weights"
            )
        return local
    if not HUB_ID.match(path) or path.startswith((".", "/", "~")):
        raise CheckpointFolderError(
            f"no checkpoint folder at '{path}'.\n"
            "Fix: set policy.options.path to an existing folder or a hub id such as openvla/openvla-7b"
        )
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=path, allow_patterns=list(WEIGHT_PATTERNS)))
    except Exception as exc:  # offline, unknown repo, gated repo: all end the same way for the user
        raise CheckpointFolderError(
            f"could not fetch '{path}' from the Hugging Face hub ({type(exc).__name__}; no network or no such repo?).\n"
            f"Fix: on a machine with network run `hf download {path} --local-dir DIR`, "
            "then set policy.options.path=DIR"
        ) from None


def read_config(folder: Path) -> dict:
    """``config.json`` with ``norm_stats`` replaced by ``dataset_statistics.json`` when present
    (OpenVLA-OFT's loader does the same)."""
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise CheckpointFolderError(
            f"'{folder}' has no config.json, so it is not an OpenVLA checkpoint folder.\n"
            "Fix: point policy.options.path at a complete checkpoint (config.json, safetensors, tokenizer files)"
        )
    config = json.loads(config_file.read_text())
    stats_file = folder / STATS_FILE
    if stats_file.is_file():
        config["norm_stats"] = json.loads(stats_file.read_text())
    return config


def read_processor(folder: Path) -> dict | None:
    """``preprocessor_config.json`` (OpenVLA's image processor: ``means``, ``stds``, ...), if any."""
    file = folder / "preprocessor_config.json"
    return json.loads(file.read_text()) if file.is_file() else None


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of ``folder``, checked against the index."""
    index = folder / INDEX_FILE
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing = [name for name in names if not (folder / name).is_file()]
        if missing:
            raise CheckpointFolderError(
                f"'{folder}' is incomplete: {INDEX_FILE} lists {', '.join(missing)}, which is missing.\n"
                "Fix: finish the download (every shard in the index) or re-save the checkpoint"
            )
        return [folder / name for name in names]
    if (folder / SINGLE_FILE).is_file():
        return [folder / SINGLE_FILE]
    raise CheckpointFolderError(
        f"'{folder}' has no weights ({SINGLE_FILE} or {INDEX_FILE} with its shards).\n"
        "Fix: finish the download or point policy.options.path at a complete checkpoint"
    )


def load_weights(folder: Path) -> dict[str, Tensor]:
    """Every tensor of the folder's safetensors files."""
    from safetensors.torch import load_file

    state: dict[str, Tensor] = {}
    for file in weight_files(folder):
        state.update(load_file(str(file)))
    return state


def check_keys(expected: set[str], found: set[str], folder: Path) -> None:
    """One clear line when the checkpoint's parameter names differ from the model's."""
    missing, unexpected = sorted(expected - found), sorted(found - expected)
    if missing or unexpected:
        shown = (missing + unexpected)[:3]
        raise CheckpointFolderError(
            f"'{folder}' does not match the OpenVLA architecture of its config.json: {len(missing)} missing and "
            f"{len(unexpected)} unexpected parameters (e.g. {', '.join(shown)}).\n"
            "Fix: use a checkpoint saved by OpenVLA/OpenVLA-OFT or by this project (same config.json and weights)"
        )


def component_file(folder: Path, name: str) -> Path | None:
    """OpenVLA-OFT's ``<name>--<step>_checkpoint.pt`` in ``folder`` (the newest step), or None."""
    found = sorted(folder.glob(f"{name}--*_checkpoint.pt"),
                   key=lambda p: int(re.sub(r"\D", "", p.name.split("--")[1]) or 0))
    return found[-1] if found else None


def load_component(file: Path) -> dict[str, Tensor]:
    """A component state dict, without the ``module.`` prefix DDP training leaves."""
    state = torch.load(file, map_location="cpu", weights_only=True)
    return {key.removeprefix("module."): value for key, value in state.items()}


def save_weights(state: dict[str, Tensor], folder: Path, max_shard_bytes: int) -> None:
    """Write ``state`` as safetensors shards of at most ``max_shard_bytes`` plus the index
    (a single ``model.safetensors`` when everything fits in one shard)."""
    from safetensors.torch import save_file

    shards: list[dict[str, Tensor]] = [{}]
    size = 0
    for key, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = tensor.detach().contiguous().cpu()
        size += nbytes
    if len(shards) == 1:
        save_file(shards[0], str(folder / SINGLE_FILE), metadata={"format": "pt"})
        return
    weight_map = {}
    for i, shard in enumerate(shards, start=1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(folder / name), metadata={"format": "pt"})
        weight_map.update({key: name for key in shard})
    total = sum(t.numel() * t.element_size() for t in state.values())
    (folder / INDEX_FILE).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))


def write_config(config: dict, folder: Path) -> None:
    """``config.json`` and ``dataset_statistics.json`` (the same ``norm_stats``)."""
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (folder / STATS_FILE).write_text(json.dumps(config.get("norm_stats") or {}, indent=2) + "\n")


def copy_extras(source: Path | None, folder: Path) -> None:
    """Carry the files of the loaded checkpoint that the save did not write (processor config, the
    published model code, tokenizer extras, README), so the saved folder works with the published
    loaders too. Weights and component files are never copied: the saved ones replace them."""
    if source is None or source.resolve() == folder.resolve():
        return
    weights = re.compile(r"^(model.*\.safetensors(\.index\.json)?|.*_checkpoint\.pt)$")
    for file in source.iterdir():
        if file.is_file() and not weights.match(file.name) and not (folder / file.name).exists():
            shutil.copy2(file, folder / file.name)


def prepare_folder(path: str) -> Path:
    """Create ``path`` and remove weights a previous save left there."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("model*.safetensors*"):
        os.remove(old)
    for old in folder.glob("*_checkpoint.pt"):
        os.remove(old)
    return folder
