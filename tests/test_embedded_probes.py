"""benchmarks/embedded_binding_probe.py and benchmarks/embedded_lm_shift.py: what they read off the embedded default's
language model."""

import shutil
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from embedded_binding_probe import count_states, pair_captions, shape_states  # noqa: E402
from embedded_lm_shift import read_states  # noqa: E402
from embedded_lm_shift import main as shift_main  # noqa: E402

from training.world import COUNT_TWINS, NUMBERS, SIZES, write_split  # noqa: E402

QWEN = ROOT / "training" / "embedded-src" / "qwen3vl"


@pytest.fixture(scope="module")
def reader():
    return (Qwen3VLForConditionalGeneration.from_pretrained(QWEN, dtype=torch.float32).eval(),
            AutoProcessor.from_pretrained(QWEN))


def test_the_size_probe_reads_two_objects_of_two_sizes_in_caption_order(reader):
    captions = pair_captions("heldout", 6, 3, "size")
    assert all(a["size"] != b["size"] and a["color"] != b["color"] for _, (a, b) in captions)
    states, own, other = shape_states(*reader, captions, attribute="size")
    layers = reader[0].config.text_config.num_hidden_layers + 1
    assert states.shape[:2] == (layers, 12)
    sizes = list(SIZES)
    assert own.tolist() == [sizes.index(o["size"]) for _, objects in captions for o in objects]
    assert other.tolist() == [sizes.index(o["size"]) for _, objects in captions for o in objects[::-1]]


def test_the_count_probe_reads_the_number_of_copies_at_the_plural_shape_word(reader):
    numbers = list(NUMBERS)
    states, own, other = count_states(*reader, "heldout", 8, 3)
    assert states.shape[1] == 8 and {numbers[n] for n in own.tolist()} == {2, 3}  # the held-out numbers
    assert [numbers[n] for n in other.tolist()] == [COUNT_TWINS[numbers[n]] for n in own.tolist()]
    _, own, _ = count_states(*reader, "train", 24, 3)
    assert {numbers[n] for n in own.tolist()} == {2, 3, 4}


def test_the_shift_is_zero_against_itself_and_counts_a_changed_model(tmp_path, capsys):
    world = tmp_path / "world"
    write_split(str(world), per_task=2, width=32, height=32, frames=5, split="heldout", tasks=["t2i"])
    manifest = str(world / "manifest.jsonl")
    shift_main([str(QWEN), str(QWEN), "--captions", manifest])
    assert capsys.readouterr().out.strip().endswith("over the mean square 0.0000")
    changed = tmp_path / "changed"
    shutil.copytree(QWEN, changed)
    vlm = Qwen3VLForConditionalGeneration.from_pretrained(changed, dtype=torch.float32)
    with torch.no_grad():
        vlm.model.language_model.layers[0].mlp.down_proj.weight.mul_(1.5)
    vlm.save_pretrained(changed)
    shift_main([str(QWEN), str(changed), "--captions", manifest])
    assert float(capsys.readouterr().out.split()[-1]) > 0.001
    assert len(read_states(QWEN, ["a red circle in the center"], -2)) == 1
