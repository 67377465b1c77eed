"""Checkpoints: everything a run needs to continue exactly, written atomically, loaded safely.

Layout of one checkpoint (``<run_dir>/checkpoints/step_000042/``)::

    policy.safetensors     the policy module's state_dict
    reference.safetensors  the frozen KL reference policy (only when train.kl_coef > 0)
    optimizer.safetensors  every tensor of the optimizer state ("state/<param>/<name>")
    pcm.safetensors        PCM keep-probabilities q, last scores v, last w~
    rng.safetensors        torch CPU (+ CUDA) RNG, the learner's and the rollout's torch.Generator
    state.json             step, metric history, MLflow run id, fault counters, numpy / python /
                           env RNG states, the optimizer's non-tensor state and param groups
    config.yaml            the resolved run config
    manifest.json          sha256 and size of every file above

Writing: a hidden temporary folder, every file fsynced, the folder renamed into place, then the
``latest`` pointer (a one-line text file) replaced atomically; older checkpoints beyond
``keep`` are renamed away before they are deleted, so a ``step_*`` folder is always complete.
Checkpoints with a higher step than the one just written (left by a continuation that a resume
from an older checkpoint abandoned) are never pruned; a warning names them, and the new run
replaces each one when it reaches its step.
Loading reads only safetensors, JSON and YAML (never pickle) and verifies the manifest first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import shutil
import stat
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from pcm_core.errors import WRITE_FIX, OutputError, PcmError, reason

FORMAT = 1
CHECKPOINTS = "checkpoints"
LATEST = "latest"
MANIFEST = "manifest.json"
STATE = "state.json"
CONFIG = "config.yaml"
STEP_DIR = re.compile(r"^step_(\d+)$")

logger = logging.getLogger(__name__)


class CheckpointError(PcmError):
    """A checkpoint is missing, incomplete or modified (two lines: problem, then fix)."""


@dataclass
class Checkpoint:
    """The content of one checkpoint, independent of where it lives.

    ``tensors`` maps a file stem (``policy``, ``optimizer``, ...) to flat ``{name: tensor}``;
    ``state`` is JSON data; ``config`` the resolved run config as a mapping.
    """

    step: int
    tensors: dict[str, dict[str, Tensor]]
    state: dict[str, Any]
    config: dict[str, Any]
    path: Path | None = field(default=None, compare=False)


# --------------------------------------------------------------------------- writing


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _plain(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """CPU, contiguous, unshared copies (safetensors refuses tensors that share memory)."""
    return {name: t.detach().to("cpu").contiguous().clone() for name, t in tensors.items()}


def write_pointer(path: Path, text: str) -> None:
    """Replace the small text file ``path`` atomically (temp file, fsync, rename, fsync dir)."""
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(temp, "w") as handle:
        handle.write(text + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    _fsync_dir(path.parent)


def save(run_dir: str | Path, checkpoint: Checkpoint, keep: int = 3) -> Path:
    """Write ``checkpoint`` as ``<run_dir>/checkpoints/step_<step>``, point ``latest`` at it and
    prune older checkpoints (see :func:`_prune`). Returns the checkpoint folder."""
    root = Path(run_dir) / CHECKPOINTS
    name = f"step_{checkpoint.step:06d}"
    temp = root / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(root)
        temp.mkdir()
        return _write(root, temp, name, checkpoint, keep)
    except (OSError, SafetensorError) as exc:  # a full, read-only or vanished folder: the last checkpoint stays
        shutil.rmtree(temp, ignore_errors=True)
        latest = root / LATEST
        kept = f"'{root / latest.read_text().strip()}' is intact" if latest.is_file() else "no earlier checkpoint exists"
        raise OutputError(
            f"cannot write checkpoint {name} in '{root}': {reason(exc)}; {kept}.\n"
            f"{WRITE_FIX}, then: pcm-run --resume {Path(run_dir)}"
        ) from None


def _write(root: Path, temp: Path, name: str, checkpoint: Checkpoint, keep: int) -> Path:
    """The files of :func:`save` into ``temp``, then the atomic switch to ``root/name``."""
    final = root / name
    files: dict[str, dict[str, Any]] = {}
    for stem, tensors in checkpoint.tensors.items():
        save_file(_plain(tensors), str(temp / f"{stem}.safetensors"), metadata={"format": str(FORMAT)})
    (temp / STATE).write_text(json.dumps({"step": checkpoint.step, **checkpoint.state}))
    (temp / CONFIG).write_text(yaml.safe_dump(checkpoint.config, sort_keys=False))
    for path in sorted(temp.iterdir()):
        _fsync_file(path)
        files[path.name] = {"sha256": _sha256(path), "bytes": path.stat().st_size}
    manifest = {"format": FORMAT, "step": checkpoint.step, "files": files}
    (temp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    _fsync_file(temp / MANIFEST)
    _fsync_dir(temp)
    if final.exists():  # the same step written twice (e.g. a stop right after a periodic save)
        _discard(final)
    os.replace(temp, final)
    _fsync_dir(root)
    write_pointer(root / LATEST, name)
    _prune(root, final, keep)
    return final


def _prune(root: Path, written: Path, keep: int) -> None:
    """Keep the newest ``keep`` checkpoints up to ``written`` (which is always kept; ``keep`` <= 0
    keeps all). Checkpoints after it belong to an abandoned continuation: left alone, with a warning."""
    found = list_checkpoints(root)
    index = found.index(written)
    older, newer = found[: index + 1], found[index + 1 :]
    if newer:
        logger.warning(
            "checkpoints after %s are left from an abandoned continuation and are kept: %s; "
            "delete them if they are not needed",
            written.name,
            ", ".join(p.name for p in newer),
        )
    for old in older[:-keep] if keep > 0 else []:
        _discard(old)


def _discard(path: Path) -> None:
    """Rename away first (so no ``step_*`` folder is ever half deleted), then delete."""
    trash = path.with_name(f".trash-{path.name}-{uuid.uuid4().hex[:8]}")
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _remove_leftovers(root: Path) -> None:
    """Temporary and half-deleted folders of writes that were killed."""
    for path in root.iterdir():
        if path.name.startswith((".tmp-", ".trash-")):
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def list_checkpoints(root: str | Path) -> list[Path]:
    """``step_*`` folders under ``root`` (a ``checkpoints`` folder), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


# --------------------------------------------------------------------------- finding


def locate(spec: str, output_dir: str | Path) -> Path:
    """The checkpoint folder ``--resume spec`` names.

    ``spec`` is ``latest`` (the newest run under ``output_dir`` that has checkpoints), a run
    folder, its ``checkpoints`` folder, or one ``step_*`` folder.
    """
    if spec == LATEST:
        runs = [p.parent.parent for p in Path(output_dir).glob(f"*/{CHECKPOINTS}/{LATEST}")]
        if not runs:
            raise CheckpointError(
                f"no checkpoint found under '{output_dir}'.\n"
                "Fix: pass the run folder or checkpoint to --resume, or set train.output_dir"
            )
        spec = str(max(runs, key=lambda p: (p / CHECKPOINTS / LATEST).stat().st_mtime))
    path = Path(spec).expanduser()
    if (path / MANIFEST).is_file() or STEP_DIR.match(path.name):
        return path
    root = path / CHECKPOINTS if (path / CHECKPOINTS).is_dir() else path
    pointer = root / LATEST
    if pointer.is_file():
        return root / pointer.read_text().strip()
    found = list_checkpoints(root)
    if found:
        return found[-1]
    raise CheckpointError(
        f"'{spec}' holds no checkpoint.\nFix: pass a run folder, its checkpoints folder or a step_* folder to --resume"
    )


def _previous(path: Path) -> Path | None:
    """The newest other checkpoint of the same run that verifies, if any."""
    for other in reversed(list_checkpoints(path.parent)):
        if other.resolve() == path.resolve():
            continue
        try:
            verify(other)
        except CheckpointError:
            continue
        return other
    return None


def _reject(path: Path, problem: str) -> CheckpointError:
    previous = _previous(path) if path.parent.is_dir() else None
    fix = f"Fix: resume from the previous one: pcm-run --resume {previous}" if previous else "Fix: resume from another checkpoint or start a new run"
    return CheckpointError(f"checkpoint '{path}' is rejected: {problem}.\n{fix}")


# --------------------------------------------------------------------------- loading


def _regular_file(path: Path) -> bool:
    """A plain file, not a symlink (to anything), folder, FIFO or device."""
    return not path.is_symlink() and stat.S_ISREG(path.lstat().st_mode)


def verify(path: str | Path) -> dict[str, Any]:
    """Check that every file the manifest lists exists with its sha256 and nothing else is there;
    returns the manifest. Raises :class:`CheckpointError` (with the previous checkpoint offered)."""
    path = Path(path)
    if not path.is_dir():
        raise _reject(path, "the folder does not exist")
    if (path / MANIFEST).exists() and not _regular_file(path / MANIFEST):
        raise _reject(path, "manifest.json is not a regular file")
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        files = manifest["files"]
        if not isinstance(files, dict):
            raise TypeError
    except FileNotFoundError:
        raise _reject(path, "it has no manifest.json (incomplete write)") from None
    except (ValueError, KeyError, TypeError):
        raise _reject(path, "manifest.json is unreadable") from None
    present = {p.name for p in path.iterdir()} - {MANIFEST}
    if present != set(files):
        odd = sorted(present ^ set(files))
        raise _reject(path, f"its files do not match the manifest ({', '.join(odd)})")
    for name, entry in files.items():
        if not _regular_file(path / name):  # a FIFO or a link to /dev/zero would be hashed forever
            raise _reject(path, f"{name} is not a regular file (a link, a folder, a pipe or a device)")
        if not isinstance(entry, dict) or (path / name).stat().st_size != entry.get("bytes"):
            raise _reject(path, f"{name} has the wrong size for its manifest entry")
        if _sha256(path / name) != entry.get("sha256"):
            raise _reject(path, f"{name} is truncated or modified (sha256 mismatch)")
        if not (name.endswith(".safetensors") or name in (STATE, CONFIG)):
            raise _reject(path, f"{name} is not a safetensors, JSON or YAML file")
    return manifest


def load(path: str | Path) -> Checkpoint:
    """Verify and read a checkpoint folder. Only safetensors, JSON and YAML are parsed."""
    path = Path(path)
    manifest = verify(path)
    tensors: dict[str, dict[str, Tensor]] = {}
    try:
        for name in manifest["files"]:
            if name.endswith(".safetensors"):
                tensors[name[: -len(".safetensors")]] = load_file(str(path / name))
        state = json.loads((path / STATE).read_text())
        config = yaml.safe_load((path / CONFIG).read_text())
    except (SafetensorError, ValueError, yaml.YAMLError, OSError) as exc:
        raise _reject(path, f"a file cannot be read safely ({type(exc).__name__})") from None
    if not isinstance(config, dict) or "step" not in state:
        raise _reject(path, "state.json or config.yaml has the wrong shape")
    return Checkpoint(int(state.pop("step")), tensors, state, config, path)


# --------------------------------------------------------------------------- state capture


def optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors (for safetensors) and JSON data."""
    raw = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in raw["state"].items():
        for name, value in entry.items():
            if isinstance(value, Tensor):
                tensors[f"state/{index}/{name}"] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"scalars": scalars, "param_groups": raw["param_groups"]}


def load_optimizer_state(optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, index, name = key.split("/", 2)
        state.setdefault(int(index), {})[name] = value
    for index, entry in meta["scalars"].items():
        state.setdefault(int(index), {}).update(entry)
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in meta["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def rng_state(generators: dict[str, torch.Generator], numpy_rngs: dict[str, np.random.Generator]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Every RNG: torch (CPU, CUDA), the given torch generators, the given numpy generators and
    python's ``random``. Returns (tensors, JSON data)."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda/{i}"] = state
    for name, generator in generators.items():
        tensors[f"generator/{name}"] = generator.get_state()
    version, internal, gauss = random.getstate()
    meta = {
        "python": [version, list(internal), gauss],
        "numpy_global": _numpy_legacy_state(),
        "numpy": {name: rng.bit_generator.state for name, rng in numpy_rngs.items()},
    }
    return tensors, meta


def _numpy_legacy_state() -> list[Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)]


def load_rng_state(
    tensors: dict[str, Tensor], meta: dict[str, Any], generators: dict[str, torch.Generator], numpy_rngs: dict[str, np.random.Generator]
) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[f"cuda/{i}"] for i in range(len(tensors)) if f"cuda/{i}" in tensors]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    for name, generator in generators.items():
        generator.set_state(tensors[f"generator/{name}"])
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, gauss = meta["numpy_global"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    for name, rng in numpy_rngs.items():
        if name in meta["numpy"]:
            rng.bit_generator.state = meta["numpy"][name]
