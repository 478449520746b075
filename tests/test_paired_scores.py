"""benchmarks/paired_scores.py: two models' training.bench scores on the same prompts, prompt by prompt."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from paired_scores import main, sign_test  # noqa: E402


def scores(path: Path, rows, captions=None) -> str:
    records = [{"task": task, "index": index, "score": score, "checks": {}, "missing": False}
               for task, index, score in rows]
    for record, caption in zip(records, captions or []):
        record["caption"] = caption
    path.write_text(json.dumps(records))
    return str(path)


def test_each_task_gets_both_means_and_the_prompts_that_rose_and_fell(tmp_path, capsys):
    old = scores(tmp_path / "old.json", [("t2i", 0, 0.0), ("t2i", 1, 1.0), ("t2i", 2, 0.5), ("clone", 9, 0.0),
                                         ("i2v", 4, 1.0)])
    new = scores(tmp_path / "new-cpu.json", [("t2i", 0, 1.0), ("t2i", 1, 1.0), ("t2i", 2, 1.0), ("i2v", 5, 1.0)])
    gpu = scores(tmp_path / "new-gpu.json", [("clone", 9, 0.25), ("t2i", 1, 0.0)])  # the later file counts
    assert main([old, f"{new},{gpu}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == "| t2i | 3 | 0.500 | 0.667 | 2 / 1 | 1.000 |"
    assert lines[3] == "| clone | 1 | 0.000 | 0.250 | 1 / 0 | 1.000 |"  # i2v: no prompt on both sides
    assert lines[4] == "| all tasks | 4 | 0.250 | 0.458 | 3 / 1 | 0.625 |" and len(lines) == 5


def test_the_sign_test_is_two_sided_and_exact():
    assert sign_test(0, 0) == 1.0 and sign_test(3, 3) == 1.0
    assert sign_test(10, 2) == pytest.approx(2 * (1 + 12 + 66) / 4096)
    assert sign_test(2, 10) == sign_test(10, 2)


def test_a_file_that_is_not_a_bench_json_is_named(tmp_path, capsys):
    (tmp_path / "log.txt").write_text("t2i 0.5\n")
    good = scores(tmp_path / "good.json", [("t2i", 0, 1.0)])
    assert main([str(tmp_path / "log.txt"), good]) == 2
    assert "log.txt: expected a training.bench --json file" in capsys.readouterr().err
    other = scores(tmp_path / "other.json", [("t2v", 0, 1.0)])
    assert main([good, other]) == 2
    assert "share no scored prompt" in capsys.readouterr().err


def test_scores_of_two_worlds_under_one_index_are_refused_not_paired(tmp_path, capsys):
    # t2i120's world and the image set's both number their t2i prompts from 0
    image = scores(tmp_path / "image.json", [("t2i", 0, 0.0), ("ti2i", 0, 1.0)], ["a red circle", "make it blue"])
    t2i120 = scores(tmp_path / "t2i120.json", [("t2i", 0, 1.0)], ["two green stars"])
    again = scores(tmp_path / "again.json", [("t2i", 0, 1.0), ("ti2i", 0, 0.0)], ["a red circle", "make it blue"])
    assert main([image, f"{again},{t2i120}"]) == 2
    err = capsys.readouterr().err
    assert "t2i120.json: t2i prompt 0 is 'two green stars', but 'a red circle' in" in err and "again.json" in err
    assert main([t2i120, again]) == 2
    assert "t2i prompt 0 is 'two green stars' in one and 'a red circle' in the other (1 such prompts)" in (
        capsys.readouterr().err)
    assert main([image, again]) == 0  # one world scored twice pairs
    assert "| all tasks | 2 | 0.500 | 0.500 | 1 / 1 | 1.000 |" in capsys.readouterr().out
