"""scripts/t2i_tail.sh: a stage-3 export's t2i tail, trained on a t2i world of its own, and its weight soup."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from vino_model.checkpoint import read_state_dict

ROOT = Path(__file__).parents[1]
SEED = "training/embedded-src/stage3"


def run(export: str, out: Path, *rest: str, **env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PY": sys.executable, "STEPS": "1", "PER_TASK": "4", "BATCH": "2", "THREADS": "1", **env}
    return subprocess.run(["bash", "scripts/t2i_tail.sh", export, str(out), *rest], cwd=ROOT, env=env, timeout=900,
                          capture_output=True, text=True)


def weights(path: Path) -> dict:
    return read_state_dict(path)[0]


def test_the_tail_trains_on_t2i_and_the_soup_weighs_it(tmp_path):
    out = tmp_path / "tail"
    done = run(SEED, out, W="0.25")
    assert done.returncode == 0, done.stderr + done.stdout
    world = [json.loads(line) for line in (out / "world" / "manifest.jsonl").read_text().splitlines()]
    assert len(world) == 4 and {s["task"] for s in world} == {"t2i"}
    config = json.loads((out / "run" / "config.json").read_text())
    assert config["data"]["tasks"] == {"t2i": 1} and config["run"]["steps"] == 1
    export, tail = weights(ROOT / SEED), weights(out / "run" / "export" / "vino.safetensors")
    soup = weights(out / "soup.safetensors")
    assert soup.keys() == export.keys() == tail.keys()
    assert any(not torch.equal(export[k], tail[k]) for k in export)  # the tail took its step
    for k in export:
        torch.testing.assert_close(soup[k].float(), 0.75 * export[k].float() + 0.25 * tail[k].float())
    made = (out / "world" / "manifest.jsonl").stat().st_mtime_ns
    done = run(SEED, out, SEED="7")  # the world is made once; the run and the soup anew
    assert done.returncode == 0, done.stderr + done.stdout
    assert (out / "world" / "manifest.jsonl").stat().st_mtime_ns == made
    again, soup = weights(out / "run" / "export" / "vino.safetensors"), weights(out / "soup.safetensors")
    assert any(not torch.equal(again[k], tail[k]) for k in tail)  # other draws
    for k in export:
        torch.testing.assert_close(soup[k].float(), 0.5 * export[k].float() + 0.5 * again[k].float())


def test_a_missing_export_a_bad_weight_or_stray_options_are_refused(tmp_path):
    out = tmp_path / "tail"
    done = run("no/such/export", out)
    assert done.returncode == 2 and "EXPORT: a stage-3 export" in done.stderr
    for w in ("0", "1", "half"):
        done = run(SEED, out, W=w)
        assert done.returncode == 2 and f"W={w}; expected the tail's weight" in done.stderr
    done = run(SEED, out, "optim.lr=1e-3")
    assert done.returncode == 2 and "expected -- before training.run options" in done.stderr
    assert not out.exists()
