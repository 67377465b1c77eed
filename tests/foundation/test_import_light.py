"""Importing the core, loading every plugin and validating a config import no heavy backend.

Heavy libraries (tracking, model hubs, simulators) belong in a component's ``__init__``; registration
and ``pcm-run --dry-run`` must stay cheap. Each check runs in a fresh interpreter.
"""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("mlflow", "transformers", "robosuite", "libero", "mani_skill", "sapien", "mujoco", "peft", "timm", "ray")

PROBE = """
import json, sys
{body}
heavy = sorted(m for m in {heavy!r} if m in sys.modules)
print(json.dumps(heavy))
"""


def _heavy_modules_after(body: str) -> list[str]:
    code = PROBE.format(body=body, heavy=HEAVY)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_core_modules_import_light():
    body = "import pcm_core, pcm_core.config, pcm_core.registry, pcm_core.interfaces, pcm_core.cli, pcm_core.types"
    assert _heavy_modules_after(body) == []


def test_registry_loads_plugins_light():
    body = (
        "from pcm_core.registry import get_registry\n"
        "registry = get_registry()\n"
        "assert not registry.broken, registry.broken\n"
        "assert all(registry.components(kind) for kind in ('env', 'policy', 'segmenter', 'proxy', 'sampler'))"
    )
    assert _heavy_modules_after(body) == []


def test_dry_run_light():
    body = "from pcm_core.cli import main\nmain(['--dry-run'])"
    assert _heavy_modules_after(body) == []


def test_probe_detects_a_heavy_import():
    assert _heavy_modules_after("import mlflow") == ["mlflow"]
