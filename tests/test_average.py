"""python -m training.average: the weighted mean of several exports of one model, written only when all agree."""

import dataclasses

import pytest
import torch
from safetensors.torch import save_file

from training.average import main
from vino_model.checkpoint import load_vino_weights, quantize_rows, read_state_dict, save_vino
from vino_model.config import preset
from vino_model.tiny import random_vino_state

CONFIG = preset("tiny")


def export(path, seed, config=CONFIG, dtype=torch.float32):
    state = {k: v.to(dtype) for k, v in random_vino_state(config, seed).items()}
    return save_vino(path, state, config), state


def test_the_average_is_each_tensors_weighted_mean_in_the_first_exports_dtype(tmp_path):
    a, first = export(tmp_path / "a.safetensors", 0, dtype=torch.bfloat16)
    b, second = export(tmp_path / "b.safetensors", 1)
    assert main([str(a), str(b), "--weights", "1,3", "--out", str(tmp_path / "soup.safetensors")]) == 0
    soup, stored = read_state_dict(tmp_path / "soup.safetensors")
    assert stored is not None and soup.keys() == first.keys()
    for key, value in soup.items():
        assert value.dtype == torch.bfloat16
        expected = (first[key].float() * 0.25 + second[key].float() * 0.75).to(torch.bfloat16)
        assert torch.equal(value, expected), key
    config, transformer, mm_encoder = load_vino_weights(tmp_path / "soup.safetensors")  # loads as a VINO
    assert config.to_json() == CONFIG.to_json() and mm_encoder


def test_equal_weights_into_shards_in_another_dtype(tmp_path):
    paths = [str(export(tmp_path / f"{n}.safetensors", n)[0]) for n in range(3)]
    states = [read_state_dict(p)[0] for p in paths]
    assert main([*paths, "--out", str(tmp_path / "seed"), "--shard-size", "20KB", "--dtype", "float16"]) == 0
    soup, _ = read_state_dict(tmp_path / "seed")
    assert len(list((tmp_path / "seed").glob("*.safetensors"))) > 1
    key = next(iter(soup))
    assert soup[key].dtype == torch.float16
    assert torch.allclose(soup[key].float(), sum(s[key] for s in states) / 3, atol=1e-3)


def test_exports_of_another_model_are_named_and_nothing_is_written(tmp_path, capsys):
    a, _ = export(tmp_path / "a.safetensors", 0)
    deeper = dataclasses.replace(CONFIG.mmdit, num_single_blocks=CONFIG.mmdit.num_single_blocks + 1)
    b, _ = export(tmp_path / "b.safetensors", 1, dataclasses.replace(CONFIG, mmdit=deeper))
    out = tmp_path / "soup.safetensors"
    assert main([str(a), str(b), "--out", str(out)]) == 2
    assert f"export {b} is a VINO of another config than {a}" in capsys.readouterr().err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors", "b.safetensors"]


@pytest.mark.parametrize("weights, message", [("1", "expected 2 positive numbers"), ("1,-1", "expected 2 positive"),
                                              ("1,x", "is not a comma-separated list of numbers")])
def test_weights_are_one_positive_number_per_export(tmp_path, capsys, weights, message):
    a, _ = export(tmp_path / "a.safetensors", 0)
    assert main([str(a), str(a), "--weights", weights, "--out", str(tmp_path / "soup.safetensors")]) == 2
    assert message in capsys.readouterr().err


def test_exports_in_int8_rows_are_refused_with_the_way_to_floats(tmp_path, capsys):
    _, state = export(tmp_path / "a.safetensors", 0)
    save_vino(tmp_path / "a8.safetensors", quantize_rows(state), CONFIG)
    out = tmp_path / "soup.safetensors"
    assert main([str(tmp_path / "a8.safetensors"), str(tmp_path / "a8.safetensors"), "--out", str(out)]) == 2
    assert f"export {tmp_path / 'a8.safetensors'} is in int8 rows" in capsys.readouterr().err
    assert not out.exists()


def test_one_export_is_not_an_average(tmp_path, capsys):
    a, _ = export(tmp_path / "a.safetensors", 0)
    assert main([str(a), "--out", str(tmp_path / "soup.safetensors")]) == 2
    assert "expected two or more to average" in capsys.readouterr().err


def test_shard_folders_average_like_their_files(tmp_path):
    a, first = export(tmp_path / "a.safetensors", 0)
    second = random_vino_state(CONFIG, 1)
    save_vino(tmp_path / "b", second, CONFIG, 20_000)  # a folder of shards
    assert main([str(a), str(tmp_path / "b"), "--out", str(tmp_path / "soup.safetensors")]) == 0
    soup, _ = read_state_dict(tmp_path / "soup.safetensors")
    assert all(torch.equal(soup[k], (first[k] * 0.5 + second[k] * 0.5)) for k in first)


@pytest.mark.parametrize("name", ["bare.safetensors", "vino.ckpt"])
def test_an_export_outside_our_layout_is_sent_to_convert(tmp_path, capsys, name):
    a, state = export(tmp_path / "a.safetensors", 0)
    other = tmp_path / name  # our keys, but no config in the header; or the official pickle
    if name.endswith(".ckpt"):
        torch.save(state, other)
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, other)
    assert main([str(a), str(other), "--out", str(tmp_path / "soup.safetensors")]) == 2
    err = capsys.readouterr().err
    assert f"export {other} is not in our layout" in err and f"python -m vino_model.convert {other}" in err
    assert not (tmp_path / "soup.safetensors").exists()


def test_a_missing_export_is_named(tmp_path, capsys):
    a, _ = export(tmp_path / "a.safetensors", 0)
    assert main([str(a), str(tmp_path / "gone.safetensors"), "--out", str(tmp_path / "soup.safetensors")]) == 2
    assert f"export {tmp_path / 'gone.safetensors'} does not exist" in capsys.readouterr().err


def test_a_tensor_of_another_shape_is_named(tmp_path, capsys):
    a, state = export(tmp_path / "a.safetensors", 0)
    key = next(k for k, v in state.items() if v.dim() == 2)
    b, _ = export(tmp_path / "b.safetensors", 1)
    wrong = {**read_state_dict(b)[0], key: torch.zeros(3, 5)}
    save_vino(b, wrong, CONFIG)
    assert main([str(a), str(b), "--out", str(tmp_path / "soup.safetensors")]) == 2
    assert f"export {b}: {key} is (3, 5)" in capsys.readouterr().err
