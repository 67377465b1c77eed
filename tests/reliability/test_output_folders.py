"""Output folders that cannot be written: two lines, no traceback, and no checkpoint lost.

Full and read-only folders are small tmpfs mounts (needs root, skipped otherwise)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import pcm_core
from pcm_core import checkpoint
from pcm_core.cli import main
from pcm_core.registry import get_registry


@pytest.fixture
def small_mount(tmp_path):
    """``mount(size, read_only=False)``: a tmpfs of ``size`` at a fresh folder, unmounted afterwards."""
    mounted: list[Path] = []

    def mount(size: str, read_only: bool = False) -> Path:
        folder = tmp_path / f"mount{len(mounted)}"
        folder.mkdir()
        options = f"size={size}" + (",ro" if read_only else "")
        if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True).returncode:
            pytest.skip("mounting a tmpfs needs root")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def run_failing(args, capsys) -> list[str]:
    with pytest.raises(SystemExit) as stopped:
        main(args)
    assert stopped.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in "".join(lines) and lines[1].startswith("Fix:"), lines
    return lines


def test_output_folder_under_a_file_is_two_lines(tiny_args, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    lines = run_failing(tiny_args(blocker / "runs"), capsys)
    assert f"cannot create a run folder in '{blocker / 'runs'}': Not a directory" in lines[0]


def test_read_only_output_folder_is_two_lines(tiny_args, small_mount, capsys):
    folder = small_mount("1m", read_only=True)
    lines = run_failing(tiny_args(folder / "runs"), capsys)
    assert "Read-only file system" in lines[0]


class FillTheDisk:
    """After the first checkpoint is written, fills the output folder's file system."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @pcm_core.hookimpl
    def pcm_on_step_end(self, step, metrics):
        if step == 2:
            with open(self.folder / "filler", "wb", buffering=0) as handle:  # unbuffered: closing flushes nothing
                try:
                    while True:
                        handle.write(b"\0" * 65536)
                except OSError:
                    pass


def test_full_disk_keeps_the_last_checkpoint(tiny_args, small_mount, capsys):
    folder = small_mount("6m")
    manager = get_registry().pm
    filler = FillTheDisk(folder)
    manager.register(filler)
    try:
        lines = run_failing(tiny_args(folder / "runs", "train.steps=3", "train.checkpoint_every=1"), capsys)
    finally:
        manager.unregister(filler)
    (run_dir,) = (folder / "runs").iterdir()
    assert lines[0].startswith("pcm-run: cannot write checkpoint step_000002 in")
    assert "No space left on device" in lines[0] and "step_000001' is intact" in lines[0]
    assert f"pcm-run --resume {run_dir}" in lines[1]
    (folder / "filler").unlink()
    saved = checkpoint.load(checkpoint.locate(str(run_dir), str(folder / "runs")))
    assert saved.step == 1
    assert not list((run_dir / "checkpoints").glob(".tmp-*"))  # the half-written one is gone
