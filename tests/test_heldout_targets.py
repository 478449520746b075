"""benchmarks/heldout_targets.py: models' held-out task means against issue 4's targets, and their shortfall sums."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from heldout_targets import ROWS, main  # noqa: E402

VIDEO_TASKS = ("t2v", "i2v", "ti2v", "tv2v", "tiv2v", "clone")


def write(folder: Path, name: str, rows) -> None:
    folder.mkdir(exist_ok=True)
    records = [{"task": task, "index": index, "score": score} for task, index, score in rows]
    (folder / f"scores-{name}.json").write_text(json.dumps(records))


def model(folder: Path, t2i120, image, video) -> Path:
    """A model scoring 1 on every prompt but those given: each a (task, scores) list for one set."""
    for name, rows in (("t2i120", t2i120), ("image", image), ("video", video)):
        if rows is not None:
            write(folder, name, [(task, i, v) for task, values in rows for i, v in enumerate(values)])
    return folder


def row(lines, name):
    return next(line for line in lines if line.startswith(f"| {name} |"))


def test_each_task_mean_the_targets_met_and_the_shortfalls(tmp_path, capsys):
    image = [("t2i", [1, 0.5]), ("ti2i", [0.9]), ("ti2i_ref", [0.6, 0.8])]  # t2i 0.75: 0.15 short; ti2i_ref 0.1
    video = [(task, [1.0]) for task in VIDEO_TASKS if task != "clone"] + [("clone", [0.5, 1.0, 0.6])]  # clone 0.7
    a = model(tmp_path / "a", [("t2i", [1, 0.8])], image, video)  # t2i120 0.9: met
    b = model(tmp_path / "b", [("t2i", [0.8])], image, None)
    assert main([f"a={a}", f"b={b}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| task | target | a | b |" and len(lines) == 2 + len(ROWS) + 2
    assert row(lines, "t2i120") == "| t2i120 | 0.90 | 0.900 | 0.800 |"
    assert row(lines, "t2i") == "| t2i | 0.90 | 0.750 | 0.750 |"
    assert row(lines, "clone") == "| clone | 0.80 | 0.700 | - |"
    assert row(lines, "targets met") == "| targets met | | 7 / 10 | 1 / 10 |"  # b: ti2i alone
    assert row(lines, "sum of shortfalls") == "| sum of shortfalls | | 0.350 | - |"  # b lacks the videos


def test_a_folder_without_scores_or_a_spec_without_a_name_is_refused(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main([f"x={tmp_path / 'empty'}"]) == 2
    assert "has no scores-image.json" in capsys.readouterr().err
    assert main([str(tmp_path / "empty")]) == 2
    assert "expected NAME=DIR" in capsys.readouterr().err
