"""At least 200 bad inputs generated from the config schema (``fuzz_inputs.py``), each through
``--set`` and through a YAML file: exit 2, at most two lines naming the key, no traceback, no
hang, all under a 2 GB address-space cap."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

DRIVER = Path(__file__).with_name("fuzz_inputs.py")


def test_every_generated_bad_input_is_two_lines(tmp_path):
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 * 1024**3, 2 * 1024**3))

    env = {k: v for k, v in os.environ.items() if k != "PCM_PLUGINS"}
    proc = subprocess.run([sys.executable, str(DRIVER), str(tmp_path)], capture_output=True, text=True, env=env,
                          timeout=900, preexec_fn=cap)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(results) >= 200
    assert {r["id"].split(":")[0] for r in results} == {"set", "yaml"}
    failures = []
    for r in results:
        lines = r["stderr"].strip().splitlines()
        good = (r["code"] == 2 and not r["hung"] and 1 <= len(lines) <= 2 and "Traceback" not in r["stderr"]
                and lines[0].startswith("pcm-run: ") and (len(lines) == 1 or lines[1].startswith("Fix:"))
                and r["key"].rsplit(".", 1)[-1] in r["stderr"])
        if not good:
            failures.append(r)
    assert not failures, json.dumps(failures[:5], indent=1)[:4000]
