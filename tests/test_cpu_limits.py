"""scripts/cpu_limits.sh: a bundle's demo, one task kind after another, timed against issue 4's CPU limits."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from vino_model.tiny import DEMO_TASK_FILES, SHIPPED_BUNDLE, make_tiny_bundle

ROOT = Path(__file__).parents[1]


def limits(bundle: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "scripts/cpu_limits.sh", str(bundle), str(out), *args], cwd=ROOT, timeout=600,
                          env={**os.environ, "PY": sys.executable}, capture_output=True, text=True)


def test_every_demo_task_is_timed_against_its_limit(tmp_path):
    bundle = make_tiny_bundle(tmp_path / "bundle")
    shutil.copytree(SHIPPED_BUNDLE / "demo", bundle / "demo")
    done = limits(bundle, tmp_path / "out", "--steps", "1")
    assert done.returncode == 0, done.stderr
    rows = re.findall(r"^\| (\d+) \| (\w+) \| ([\d.]+) \| (\d+) \| ([\d.]+)", done.stdout, re.M)
    demo = [e for name in DEMO_TASK_FILES for e in json.loads((SHIPPED_BUNDLE / name).read_text())]
    assert sorted((int(i), task) for i, task, *_ in rows) == sorted((e["index"], e["task"]) for e in demo)
    for index, task, seconds, limit, share in rows:
        assert int(limit) == (60 if task in ("t2i", "ti2i") else 180)
        assert abs(float(share) - float(seconds) / int(limit)) < 0.006
        suffix = "png" if task in ("t2i", "ti2i") else "npz"
        assert (tmp_path / "out" / f"{index}_{task}.{suffix}").is_file()


def test_a_folder_that_is_not_a_bundle_is_refused(tmp_path):
    done = limits(tmp_path, tmp_path / "out")
    assert done.returncode == 2 and "usage: bash scripts/cpu_limits.sh" in done.stderr
    assert not (tmp_path / "out").exists()
