"""benchmarks/embedded_count.py: the copies a model draws for each count prompt, as the count check finds them."""

import copy
import sys
from pathlib import Path

import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from embedded_count import main  # noqa: E402
from training import world  # noqa: E402
from training.bench import prompted_count  # noqa: E402
from training.manifest import read_manifest  # noqa: E402
from vino_model.tasks import read_task_file  # noqa: E402


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """A held-out t2i split and its count prompts: manifest index -> (copies prompted, meta)."""
    data = tmp_path_factory.mktemp("heldout")
    world.main(["--out", str(data), "--split", "heldout", "--tasks", "t2i", "--per-task", "40", "--seed", "5"])
    prompts = {i: (prompted_count(r.meta), r.meta) for i, r in enumerate(read_manifest(str(data / "manifest.jsonl")))
               if prompted_count(r.meta)}
    assert {p for p, _ in prompts.values()} == {2, 3}, "the split should hold count prompts of two and three"
    return data, prompts


def draw(out: Path, index: int, meta: dict, copies: int):
    """Write index's output as vino_model.generate names it: the target scene with its first `copies` objects."""
    scene = copy.deepcopy(meta["scene"])
    scene["objects"] = scene["objects"][:copies]
    out.mkdir(exist_ok=True)
    Image.fromarray(world.render(scene)[0]).save(out / f"{index}_t2i.png")


def test_the_table_counts_the_copies_each_prompt_drew(split, tmp_path, capsys):
    data, prompts = split
    threes = [i for i, (p, _) in prompts.items() if p == 3]
    for index, (number, meta) in prompts.items():  # every three drawn as two; every two right
        draw(tmp_path / "model", index, meta, 2)
    assert main([str(data), str(tmp_path / "model")]) == 0
    lines = capsys.readouterr().out.splitlines()
    twos = len(prompts) - len(threes)
    assert lines[2] == f"| 2 | {twos} | 0 | 0 | {twos} | 0 | 0 | 0 | 0 | {twos} / {twos} |"
    assert lines[3] == f"| 3 | {len(threes)} | 0 | 0 | {len(threes)} | 0 | 0 | 0 | 0 | 0 / {len(threes)} |"
    assert lines[4].endswith(f"| {twos} / {len(prompts)} |") and len(lines) == 5


def test_the_base_is_compared_prompt_by_prompt(split, tmp_path, capsys):
    data, prompts = split
    first, *rest = prompts
    for index, (number, meta) in prompts.items():  # the base misses the first prompt only; the model all but it
        draw(tmp_path / "base", index, meta, number - (index == first))
        draw(tmp_path / "model", index, meta, number - (index != first))
    (tmp_path / "model" / f"{rest[0]}_t2i.png").unlink()  # a missing output is counted as missing, not right
    assert main([str(data), str(tmp_path / "model"), "--base", str(tmp_path / "base")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert sum(int(line.split("|")[-3]) for line in out[2:-2]) == 1  # the missing column
    assert out[-2].endswith(f"| 1 / {len(prompts)} |")
    assert out[-1].startswith(f"against the base: right where it was wrong 1, wrong where it was right {len(rest)},")


def test_a_base_without_outputs_is_an_error_not_a_base_that_drew_none(split, tmp_path, capsys):
    data, prompts = split
    for index, (number, meta) in prompts.items():
        draw(tmp_path / "model", index, meta, number)
    (tmp_path / "scores").mkdir()  # a folder of scores, not of outputs
    assert main([str(data), str(tmp_path / "model"), "--base", str(tmp_path / "scores")]) == 2
    assert f"--base {tmp_path / 'scores'}: no t2i output of any count prompt" in capsys.readouterr().err


def test_the_tally_by_object_finds_the_object_a_model_miscounts(split, tmp_path, capsys):
    data, prompts = split
    def name(meta):
        return world.object_name(meta["scene"]["objects"][0], False)

    twos = {i: name(meta) for i, (p, meta) in prompts.items() if p == 2}
    wrong = next(iter(twos.values()))  # every "two" of this object drawn as one, the rest right
    for index, (number, meta) in prompts.items():
        draw(tmp_path / "model", index, meta, 1 if twos.get(index) == wrong else number)
    assert main([str(data), str(tmp_path / "model"), "--by-object"]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = lines.index("| prompted | object | prompts | right |")
    rows = {tuple(c.strip() for c in line.split("|")[1:3]): line.split("|")[4].strip() for line in lines[start + 2:]}
    assert set(rows) == {(str(p), name(meta)) for p, meta in prompts.values()}
    n = sum(v == wrong for v in twos.values())
    assert rows["2", wrong] == f"0 / {n}"
    assert all(right.split(" / ")[0] == right.split(" / ")[1] for key, right in rows.items() if key != ("2", wrong))


def test_the_ground_truth_is_counted_right(split, capsys):
    data, prompts = split
    assert main([str(data), "--ground-truth"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith(f"| {len(prompts)} / {len(prompts)} |")


def test_a_split_without_count_prompts_is_named(tmp_path, capsys):
    world.main(["--out", str(tmp_path), "--split", "heldout", "--tasks", "t2v", "--per-task", "2"])
    assert main([str(tmp_path), "--ground-truth"]) == 2
    assert capsys.readouterr().err.strip().endswith("no count prompts; expected t2i scenes of two or more copies "
                                                    "of one object")


def test_the_count_task_file_holds_every_count_prompt_as_the_held_out_set_captions_it(split, tmp_path):
    data, prompts = split
    assert main([str(data), "--tasks", str(tmp_path / "count.json")]) == 0
    entries = read_task_file(tmp_path / "count.json")
    held_out = {e.index: e for e in read_task_file(data / "tasks_image.json")}  # what the image set draws
    assert [e.index for e in entries] == list(prompts)
    assert all((e.task, e.caption) == (held_out[e.index].task, held_out[e.index].caption) for e in entries)


def test_the_swap_task_file_names_the_other_number_for_the_same_prompts(split, tmp_path):
    data, prompts = split
    assert main([str(data), "--swapped-tasks", str(tmp_path / "swapped.json")]) == 0
    entries = read_task_file(tmp_path / "swapped.json")  # as vino_model.generate reads it
    assert [e.index for e in entries] == list(prompts)
    captions = [r.caption_long for r in read_manifest(str(data / "manifest.jsonl"))]
    for entry in entries:
        own, other = {2: ("two ", "three "), 3: ("three ", "two ")}[prompts[entry.index][0]]
        assert entry.task == "t2i" and own in captions[entry.index]
        assert entry.caption == captions[entry.index].replace(own, other)


def test_the_swap_table_tells_whether_the_number_moved_the_copies(split, tmp_path, capsys):
    data, prompts = split
    twos = [i for i, (p, _) in prompts.items() if p == 2]
    for index, (number, meta) in prompts.items():  # right under its own number; two copies under the other
        draw(tmp_path / "own", index, meta, number)
        draw(tmp_path / "swapped", index, meta, 2)
    (tmp_path / "swapped" / f"{twos[0]}_t2i.png").unlink()  # a prompt drawn under one number only is left out
    assert main([str(data), str(tmp_path / "own"), "--swapped", str(tmp_path / "swapped")]) == 0
    lines = capsys.readouterr().out.splitlines()
    n, threes = len(prompts), len(prompts) - len(twos)
    assert lines[-3].startswith(f"| two | {n} | 2.00 | 0 | 0 | {n} |") and lines[-3].endswith(f"| {n} / {n} |")
    mean = (2 * (len(twos) - 1) + 3 * threes) / (n - 1)
    assert lines[-2].startswith(f"| three | {n} | {mean:.2f} | 0 | 0 | {len(twos) - 1} | {threes} |")
    assert lines[-2].endswith(f"| 1 | {threes} / {n} |")
    assert lines[-1] == f'the number changed the copies for {threes} / {n - 1} prompts drawn under both: ' \
                        f'more under "three" for {threes}, fewer for 0'


def test_the_swap_table_needs_the_outputs_of_the_prompts_as_written(split, tmp_path, capsys):
    data, _ = split
    with pytest.raises(SystemExit):
        main([str(data), "--ground-truth", "--swapped", str(tmp_path)])
    assert "--swapped needs OUTPUTS" in capsys.readouterr().err
