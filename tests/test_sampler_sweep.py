"""scripts/sampler_sweep.sh: sampler settings scored on a tuning world and paired with the first setting."""

import json
import os
import subprocess
import sys
from pathlib import Path

from vino_model.tiny import make_tiny_bundle

ROOT = Path(__file__).parents[1]


def sweep(tmp_path: Path, *variants: str, **env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PY": sys.executable, "DATA": str(tmp_path / "tune"), "SIZE": "32", "PER_TASK": "1",
           "TASKS": "t2i,clone", "WORKERS": "1", "SHARDS": "1", **env}
    return subprocess.run(["bash", "scripts/sampler_sweep.sh", str(make_tiny_bundle(tmp_path / "bundle")),
                           str(tmp_path / "out"), *variants], cwd=ROOT, env=env, timeout=600, capture_output=True,
                          text=True)


def test_each_variant_is_scored_and_paired_with_the_first(tmp_path):
    done = sweep(tmp_path, "base:--steps 1", "more:--steps 2 --cfg 2")
    assert done.returncode == 0, done.stderr
    for name in ("base", "more"):
        scores = json.loads((tmp_path / "out" / name / "scores.json").read_text())
        assert sorted(r["task"] for r in scores) == ["clone", "t2i"]
    assert not (tmp_path / "out" / "base" / "paired.md").exists()
    paired = (tmp_path / "out" / "more" / "paired.md").read_text()
    assert "| clone | 1 |" in paired and "| t2i | 1 |" in paired
    made = (tmp_path / "tune" / "made-with").read_text()
    assert "--seed 3" in made and "--split heldout" in made  # held-out pairs, not the write-ups' seed-0 world


def test_a_variant_without_a_name_is_refused_before_anything_is_made(tmp_path):
    done = sweep(tmp_path, "base:", "--steps 2")
    assert done.returncode == 2 and "variant '--steps 2': expected NAME:OPTIONS" in done.stderr
    assert not (tmp_path / "tune").exists() and not (tmp_path / "out").exists()


def test_no_variant_starts_after_until(tmp_path):
    done = sweep(tmp_path, "base:--steps 1", "more:--steps 2", UNTIL="1")
    assert done.returncode == 0, done.stderr
    assert "out of time: base and the variants after it not run" in done.stdout
    assert not (tmp_path / "out" / "base").exists()
