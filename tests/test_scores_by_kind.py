"""benchmarks/scores_by_kind.py: held-out scores split by the scene's object count or the edit's kind."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from scores_by_kind import main  # noqa: E402
from training import bench, world  # noqa: E402
from training.manifest import read_manifest  # noqa: E402


def make(tmp_path: Path, seed: int) -> tuple[Path, Path]:
    """A small held-out split of t2i and tv2v and its ground truth's scores."""
    data = tmp_path / f"world{seed}"
    world.main(["--out", str(data), "--split", "heldout", "--tasks", "t2i,tv2v", "--per-task", "12", "--size", "64",
                "--seed", str(seed), "--video-format", "npz"])
    scores = tmp_path / f"scores{seed}.json"
    tasks = [str(data / "tasks_image.json"), str(data / "tasks_video.json")]
    scores.write_text(json.dumps(bench.evaluate(tasks, None)))
    return data, scores


def test_each_kind_gets_a_row_with_its_prompts_scores(tmp_path, capsys):
    data, scores = make(tmp_path, 1)
    records = list(read_manifest(data / "manifest.jsonl"))
    results = json.loads(scores.read_text())
    replace = [r for r in results if records[r["index"]].meta.get("edit", {}) and
               records[r["index"]].meta["edit"]["kind"] == "replace"]
    for r in replace:  # the replacements fail, the rest keep the ground truth's 1.0
        r["score"], r["checks"]["edited"] = 0.0, 0.0
    scores.write_text(json.dumps(results))
    capsys.readouterr()  # the world's own lines
    assert main([str(data), str(scores)]) == 0
    rows = {tuple(cell.strip() for cell in line.split("|")[1:4]): line.split("|")[4].strip()
            for line in capsys.readouterr().out.splitlines()[2:]}
    singles = sum(len(r.meta["scene"]["objects"]) == 1 for r in records if r.task == "t2i")
    assert rows[("t2i", "1 object", str(singles))] == "1.000"
    assert rows[("tv2v", "replace", str(len(replace)))] == "0.000"
    assert sum(int(n) for task, _, n in rows if task == "tv2v") == 12
    assert all(score == "1.000" for (task, kind, _), score in rows.items() if kind != "replace")


def test_scores_of_another_world_are_refused(tmp_path, capsys):
    data, _ = make(tmp_path, 1)
    _, other = make(tmp_path, 2)  # the same tasks at the same indices, other prompts
    assert main([str(data), str(other)]) == 2
    assert "is not this world split's prompt" in capsys.readouterr().err


def test_scores_without_captions_are_counted_as_unchecked(tmp_path, capsys):
    data, scores = make(tmp_path, 1)
    old = [{k: v for k, v in r.items() if k != "caption"} for r in json.loads(scores.read_text())]
    scores.write_text(json.dumps(old))
    assert main([str(data), str(scores)]) == 0
    assert "(24 scores carry no caption" in capsys.readouterr().out
