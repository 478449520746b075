"""scripts/device_score.sh: exports bundled and scored on the held-out sets, with only scores and tables in $OUT."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "out").mkdir(exist_ok=True)
    env = {**os.environ, "OUT": str(tmp_path / "out"), "WORK": str(tmp_path / "work"), "PY": sys.executable,
           "WHEELS": str(tmp_path / "no-wheels"), "SHARDS": "1", "DATA": str(tmp_path / "heldout"), "SIZE": "32",
           "PER_TASK": "1", "WORKERS": "1"}
    return subprocess.run(["bash", "scripts/device_score.sh", *args], cwd=ROOT, env=env, timeout=900,
                          capture_output=True, text=True)


def test_only_the_scores_and_tables_come_back(tmp_path):
    done = run(tmp_path, "training/embedded-src/stage3", "refvideo4", "--", "--steps", "1")
    assert done.returncode == 0, done.stderr + done.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["score.log", "scores-refvideo4.json", "tables.txt"]
    scores = json.loads((tmp_path / "out" / "scores-refvideo4.json").read_text())
    assert sorted(r["task"] for r in scores) == ["tiv2v", "tv2v"]
    assert "== refvideo4" in (tmp_path / "out" / "tables.txt").read_text()
    assert list((tmp_path / "work" / "1" / "scores" / "refvideo4").glob("*.npz"))  # the videos stayed on the machine


def test_several_checkpoints_and_an_average_score_in_one_call(tmp_path):
    seed = "training/embedded-src/stage3"
    done = run(tmp_path, seed, f"{seed}+{seed}", "refvideo4", "--", "--steps", "1")
    assert done.returncode == 0, done.stderr + done.stdout
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["1", "2", "score.log"]
    for n in ("1", "2"):
        assert sorted(p.name for p in (out / n).iterdir()) == ["scores-refvideo4.json", "tables.txt"]
    # the average of an export with itself is that export: the same videos, the same scores
    first, second = (json.loads((out / n / "scores-refvideo4.json").read_text()) for n in ("1", "2"))
    assert [r["score"] for r in first] == [r["score"] for r in second]
    assert (tmp_path / "work" / "2" / "average.safetensors").is_file()


def test_a_missing_checkpoint_or_too_many_files_is_refused(tmp_path):
    done = run(tmp_path, "no/such/export")
    assert done.returncode == 2 and "'no/such/export' is not a stage-3 export" in done.stderr
    done = run(tmp_path, "training/embedded-src/stage3+no/such/export", "image")
    assert done.returncode == 2 and "'no/such/export' is not a stage-3 export" in done.stderr
    done = run(tmp_path, "image")
    assert done.returncode == 2 and "CHECKPOINT: a stage-3 export" in done.stderr
    done = run(tmp_path, "training/embedded-src/stage3", *["image"] * 7)
    assert done.returncode == 2 and "make 9 files; a call returns at most 8" in done.stderr
    done = run(tmp_path, "training/embedded-src/stage3", "training/embedded-src/stage3", "video", "image", "t2i120")
    assert done.returncode == 2 and "make 9 files" in done.stderr
    assert not (tmp_path / "work").exists() and list((tmp_path / "out").iterdir()) == []
