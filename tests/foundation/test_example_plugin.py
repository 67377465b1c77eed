"""The worked third-party plugin in examples/pcm-contact-segmenter, installed as a user would.

It is pip-installed (offline, no dependencies) into a temporary folder; subprocesses put that folder
on PYTHONPATH, so the distribution and its ``pcm`` entry point are visible only to them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "pcm-contact-segmenter"
PCM_RUN = str(Path(sys.executable).with_name("pcm-run"))


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """A folder holding the installed ``pcm-contact-segmenter`` (module + dist-info)."""
    base = tmp_path_factory.mktemp("contact")
    source = base / "src"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = base / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "--target", str(target), str(source)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (target / "pcm_contact_segmenter.py").is_file()
    assert list(target.glob("pcm_contact_segmenter-0.1.0.dist-info"))
    return target


def _run(site: Path, argv: list[str], **extra_env: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PCM_PLUGINS"}
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["COLUMNS"] = "250"
    env.update(extra_env)
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, cwd=site.parent)


def test_module_is_under_30_lines_of_code():
    lines = (EXAMPLE / "pcm_contact_segmenter.py").read_text().splitlines()
    code = [line for line in lines if line.strip() and not line.strip().startswith(("#", '"""'))]
    assert len(code) < 30, len(code)


def test_plugins_lists_contact_with_its_distribution(site):
    proc = _run(site, [PCM_RUN, "plugins"])
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith("│ contact "))
    assert "num_phases: int = 3" in row
    assert row.rstrip("│ ").endswith("pcm-contact-segmenter")
    assert "BROKEN" not in proc.stdout


def test_not_visible_without_install_or_when_excluded(site):
    proc = _run(site, [PCM_RUN, "plugins"], PCM_PLUGINS="")
    assert proc.returncode == 0 and "│ contact " not in proc.stdout
    proc = _run(site, [PCM_RUN, "--dry-run", "--set", "pcm.segmenter=contact"], PCM_PLUGINS="")
    assert proc.returncode == 2
    assert "unknown segmenter 'contact'" in proc.stderr


def test_dry_run_validates_contact(site):
    proc = _run(site, [PCM_RUN, "--dry-run", "--set", "pcm.segmenter=contact", "--set", "pcm.segmenter_options.num_phases=2"])
    assert proc.returncode == 0, proc.stderr
    assert "segmenter=contact" in proc.stdout
    assert "num_phases: 2" in proc.stdout


def test_dry_run_rejects_bad_contact_options(site):
    proc = _run(site, [PCM_RUN, "--dry-run", "--set", "pcm.segmenter=contact", "--set", "pcm.segmenter_options.num_phase=2"])
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "pcm-run: unknown key 'pcm.segmenter_options.num_phase'.",
        "Fix: did you mean 'num_phases'? valid keys: num_phases",
    ]


SEGMENT = """
import json, sys
import torch
from pcm_core.config import load_config, resolve_components
from pcm_core.types import RolloutBatch

config = load_config(sys.argv[1])
segmenter = resolve_components(config)["segmenter"].build()
# 3 trajectories x 7 chunks; gripper 1 = closed (in contact); the last one is padded after 4 chunks
gripper = torch.tensor([
    [0, 0, 1, 1, 0, 0, 0],  # grasp at t=2, release at t=4
    [0, 1, 1, 1, 1, 1, 1],  # grasp at t=1, never released
    [1, 0, 1, 0, 0, 0, 0],  # closed from the start, reopens at t=1, closes again (stays released)
], dtype=torch.float32)
N, T, K, D, L = 3, 7, 2, 7, 14
batch = RolloutBatch(
    obs={"proprio": torch.zeros(N, T, 4)}, instructions=["pick"] * N,
    actions=torch.zeros(N, T, K, D), tokens=torch.zeros(N, T, L, dtype=torch.long),
    old_logprobs=torch.zeros(N, T, L), entropy=torch.zeros(N, T),
    lengths=torch.tensor([7, 7, 4]), rewards=torch.tensor([1.0, 0.0, 1.0]),
    group_index=torch.tensor([0, 0, 0]), info={"gripper": gripper},
)
phases = segmenter.segment(batch)
print(json.dumps({"name": type(segmenter).__name__, "num_phases": segmenter.num_phases,
                  "dtype": str(phases.dtype), "phases": phases.tolist()}))
"""


@pytest.mark.parametrize(
    "num_phases, expected",
    [
        (3, [[0, 0, 1, 1, 2, 2, 2], [0, 1, 1, 1, 1, 1, 1], [1, 2, 2, 2, 2, 2, 2]]),
        (2, [[0, 0, 1, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]]),
    ],
)
def test_segment_from_config_file(site, num_phases, expected):
    config = site.parent / f"contact_{num_phases}.yaml"
    config.write_text(f"pcm:\n  segmenter: contact\n  segmenter_options: {{num_phases: {num_phases}}}\n")
    script = site.parent / "segment.py"
    script.write_text(SEGMENT)
    proc = _run(site, [sys.executable, str(script), str(config)])
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"name": "ContactSegmenter", "num_phases": num_phases, "dtype": "torch.int64", "phases": expected}
