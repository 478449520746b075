"""scripts/score_heldout.sh: a bundle's held-out sets, made, generated, scored and paired as the write-ups
report them; scripts/count_heldout.sh: its held-out count prompts, drawn alone, counted and paired with a base."""

import json
import os
import subprocess
import sys
from pathlib import Path

from training.bench import prompted_count
from training.manifest import read_manifest
from vino_model.tiny import make_tiny_bundle

ROOT = Path(__file__).parents[1]


def on_tiny_bundle(script: str, tmp_path: Path, out: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    """scripts/SCRIPT on a tiny random bundle, its worlds small and under tmp_path/heldout*."""
    env = {**os.environ, "PY": sys.executable, "DATA": str(tmp_path / "heldout"), "SIZE": "32", "WORKERS": "1", **env}
    return subprocess.run(["bash", f"scripts/{script}", str(make_tiny_bundle(tmp_path / "bundle")),
                           str(tmp_path / out), *args], cwd=ROOT, env=env, timeout=600, capture_output=True, text=True)


def score(tmp_path: Path, out: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    return on_tiny_bundle("score_heldout.sh", tmp_path, out, *args, **{"PER_TASK": "2", "T2I_PER_TASK": "3", **env})


def count(tmp_path: Path, out: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    return on_tiny_bundle("count_heldout.sh", tmp_path, out, *args,
                          **{"T2I_PER_TASK": "30", "COUNT13_PER_TASK": "30", **env})


def scored(path: Path) -> list[tuple[str, int]]:
    return sorted((r["task"], int(r["index"])) for r in json.loads(path.read_text()))


def test_sets_are_the_first_prompts_of_each_kind_and_pair_with_an_earlier_run(tmp_path):
    done = score(tmp_path, "old", "refvideo4", "t2i120", "--", "--steps", "1")
    assert done.returncode == 0, done.stderr
    video = json.loads((tmp_path / "heldout" / "tasks_video.json").read_text())
    first = {kind: [e["index"] for e in video if e["task"] == kind][:4] for kind in ("tv2v", "tiv2v")}
    assert scored(tmp_path / "old" / "scores-refvideo4.json") == sorted(
        (kind, index) for kind, indices in first.items() for index in indices)
    assert scored(tmp_path / "old" / "scores-t2i120.json") == [("t2i", i) for i in range(3)]  # its own world
    assert not (tmp_path / "old" / "paired-t2i120.md").exists()

    done = score(tmp_path, "new", "t2i120", "--", "--steps", "2", BASE=str(tmp_path / "old"))
    assert done.returncode == 0, done.stderr
    paired = (tmp_path / "new" / "paired-t2i120.md").read_text()
    assert "t2i" in paired and "| 3 |" in paired  # the three prompts both runs scored


def test_heldout_seed_draws_the_sets_from_a_world_of_that_seed(tmp_path):
    done = score(tmp_path, "fresh", "refvideo4", "--", "--steps", "1", HELDOUT_SEED="5",
                 DATA=str(tmp_path / "heldout5"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "heldout5" / "made-with").read_text().split() == \
        ["--size", "32", "--per-task", "2", "--split", "heldout", "--seed", "5"]
    video = json.loads((tmp_path / "heldout5" / "tasks_video.json").read_text())
    assert scored(tmp_path / "fresh" / "scores-refvideo4.json") == sorted(
        (e["task"], e["index"]) for e in video if e["task"] in ("tv2v", "tiv2v"))


def test_a_heldout_seed_that_is_not_a_number_is_refused_before_anything_is_made(tmp_path):
    done = score(tmp_path, "out", "image", HELDOUT_SEED="fresh")
    assert done.returncode == 2 and "HELDOUT_SEED 'fresh'" in done.stderr
    assert not (tmp_path / "heldout").exists() and not (tmp_path / "out").exists()


def test_a_folder_that_is_not_a_bundle_is_refused(tmp_path):
    done = subprocess.run(["bash", "scripts/score_heldout.sh", str(tmp_path), str(tmp_path / "out")], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "BUNDLE: a folder that training.bundle wrote" in done.stderr
    assert not (tmp_path / "out").exists()


def test_an_unknown_set_stops_before_anything_is_made(tmp_path):
    done = score(tmp_path, "out", "image", "video24")
    assert done.returncode == 2
    assert "unknown set 'video24'" in done.stderr and "clone12" in done.stderr
    assert not (tmp_path / "heldout").exists() and not (tmp_path / "out").exists()


def test_video_is_every_prompt_of_each_video_kind(tmp_path):
    done = score(tmp_path, "out", "video", "--", "--steps", "1")
    assert done.returncode == 0, done.stderr
    video = json.loads((tmp_path / "heldout" / "tasks_video.json").read_text())
    assert {e["task"] for e in video} == {"t2v", "i2v", "ti2v", "tv2v", "tiv2v", "clone"}
    assert scored(tmp_path / "out" / "scores-video.json") == sorted((e["task"], e["index"]) for e in video)


def count_prompts(split: Path) -> int:
    return sum(bool(prompted_count(r.meta)) for r in read_manifest(str(split / "manifest.jsonl")))


def test_every_count_prompt_of_both_worlds_is_drawn_counted_and_paired_with_the_base(tmp_path):
    done = count(tmp_path, "old", "--", "--steps", "1")
    assert done.returncode == 0, done.stderr
    for name, world in (("t2i120", "heldout-t2i120"), ("h13", "heldout-count13")):
        prompts = count_prompts(tmp_path / world)
        assert prompts > 0, f"{world} should hold count prompts"
        assert len(list((tmp_path / "old" / name).glob("*_t2i.png"))) == prompts  # those prompts alone
        table = (tmp_path / "old" / f"counts-{name}.md").read_text()
        assert f"/ {prompts} |" in table.splitlines()[-1] and "against the base" not in table

    done = count(tmp_path, "new", "--", "--steps", "2", BASE=str(tmp_path / "old"))
    assert done.returncode == 0, done.stderr
    for name in ("t2i120", "h13"):
        assert "against the base: right where it was wrong" in (tmp_path / "new" / f"counts-{name}.md").read_text()


def test_count_refuses_a_folder_that_is_not_a_bundle_or_options_without_their_dashes(tmp_path):
    for args in ([str(tmp_path), str(tmp_path / "out")],
                 [str(make_tiny_bundle(tmp_path / "bundle")), str(tmp_path / "out"), "--steps", "1"]):
        done = subprocess.run(["bash", "scripts/count_heldout.sh", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 2 and "usage: bash scripts/count_heldout.sh BUNDLE OUT [-- generate options]" \
            in done.stderr
        assert not (tmp_path / "out").exists()
