"""training.grow: single blocks added with their gates at zero leave what the model draws exactly as it was; with
--split they share the last block's gate and draw near it (benchmarks/latent_drift.py measures how near)."""

import json
from pathlib import Path

import pytest
import torch

from benchmarks import latent_drift
from tiny_demo import write_demo
from training.grow import grow, main
from vino_model import media
from vino_model.checkpoint import load_vino_weights, read_state_dict, save_vino
from vino_model.config import VinoConfig
from vino_model.pipeline import VinoPipeline

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    bundle, tasks = write_demo(tmp_path_factory.mktemp("demo"))
    return bundle, json.loads(tasks.read_text())


def ti2v_latents(weights, bundle, entries):
    entry = next(e for e in entries if e["task"] == "ti2v")
    images = [media.read_image(p) for p in entry["ref_image_paths"]]
    pipe = VinoPipeline.load(weights, bundle / "qwen3vl", bundle / "vae.safetensors")
    return pipe.generate("ti2v", entry["caption"], images, steps=2, seed=7, frames=5, width=48, height=32,
                         sample_posterior=False).latents


def test_grown_blocks_draw_exactly_what_the_export_drew_until_their_gates_move(demo, tmp_path):
    bundle, entries = demo
    assert main([str(bundle / "vino.safetensors"), "--single", "2", "--out", str(tmp_path / "grown"),
                 "--shard-size", "1MB"]) == 0
    config, transformer, _ = load_vino_weights(tmp_path / "grown")
    before, _, _ = load_vino_weights(bundle / "vino.safetensors")
    count = before.mmdit.num_single_blocks
    assert config.mmdit.num_single_blocks == count + 2
    hidden = config.mmdit.hidden
    for index in (count, count + 1):
        for name, value in transformer.items():
            if not name.startswith(f"single_transformer_blocks.{count - 1}."):
                continue
            new = transformer[name.replace(f".{count - 1}.", f".{index}.", 1)]
            if ".norm.linear." in name:
                assert torch.equal(new[: 2 * hidden], value[: 2 * hidden]) and not new[2 * hidden:].any()
            else:
                assert torch.equal(new, value)
    original = ti2v_latents(bundle / "vino.safetensors", bundle, entries)
    assert torch.equal(ti2v_latents(tmp_path / "grown", bundle, entries), original)

    # in int8 rows: smaller, and still near what the export drew
    assert main([str(bundle / "vino.safetensors"), "--single", "2", "--out", str(tmp_path / "int8.safetensors"),
                 "--int8"]) == 0
    shards = sum(f.stat().st_size for f in (tmp_path / "grown").glob("*.safetensors"))
    assert (tmp_path / "int8.safetensors").stat().st_size < 0.8 * shards
    error = (ti2v_latents(tmp_path / "int8.safetensors", bundle, entries) - original).abs().max()
    assert 0 < error < 0.01 * original.abs().max()

    # with the copies' gates left open, the same blocks change the drawing: the zeros are what keeps it
    state, stored = read_state_dict(bundle / "vino.safetensors")
    state = {k: v.float() for k, v in state.items()}
    grown, grown_config = grow(state, VinoConfig.from_dict(stored), 2)
    for index in (count, count + 1):
        grown[f"transformer.single_transformer_blocks.{index}.norm.linear.bias"] = \
            state[f"transformer.single_transformer_blocks.{count - 1}.norm.linear.bias"].clone()
    save_vino(tmp_path / "open.safetensors", grown, grown_config)
    assert not torch.equal(ti2v_latents(tmp_path / "open.safetensors", bundle, entries), original)


def test_bad_growth_is_refused_and_writes_nothing(demo, tmp_path, capsys):
    bundle, _ = demo
    assert main([str(bundle / "vino.safetensors"), "--single", "0", "--out", str(tmp_path / "g.safetensors")]) == 2
    assert "--single 0: expected at least 1 block to add" in capsys.readouterr().err
    assert not (tmp_path / "g.safetensors").exists()


def test_split_growth_shares_the_last_gate_so_every_block_trains(demo, tmp_path, capsys):
    bundle, entries = demo
    state, stored = read_state_dict(bundle / "vino.safetensors")
    state = {k: v.float() for k, v in state.items()}
    config = VinoConfig.from_dict(stored)
    count, hidden = config.mmdit.num_single_blocks, config.mmdit.hidden
    grown, _ = grow(state, config, 2, split=True)
    gate = state[f"transformer.single_transformer_blocks.{count - 1}.norm.linear.bias"][2 * hidden:]
    shares = [grown[f"transformer.single_transformer_blocks.{i}.norm.linear.bias"][2 * hidden:]
              for i in range(count - 1, count + 2)]
    for share in shares:  # a third each, none shut: they sum to the gate the last block had
        assert torch.allclose(share, gate / 3) and share.abs().sum() > 0
    assert torch.allclose(sum(shares), gate, atol=1e-6)

    # near the export's drawing, not exactly it
    assert main([str(bundle / "vino.safetensors"), "--single", "2", "--split", "--out",
                 str(tmp_path / "split.safetensors")]) == 0
    original = ti2v_latents(bundle / "vino.safetensors", bundle, entries)
    error = (ti2v_latents(tmp_path / "split.safetensors", bundle, entries) - original).norm() / original.norm()
    assert 0 < error < 0.05

    # benchmarks/latent_drift.py measures the same: nothing for the export against itself, some for the split
    capsys.readouterr()
    assert latent_drift.main([str(bundle / "vino.safetensors"), str(bundle / "vino.safetensors"),
                              str(tmp_path / "split.safetensors"), "--data", str(ROOT / "vino_model/embedded/demo"),
                              "--prompts", "1", "--steps", "2", "--size", "32", "--frames", "5",
                              "--qwen", str(bundle / "qwen3vl"), "--vae", str(bundle / "vae.safetensors")]) == 0
    rows = [[cell.strip() for cell in line.strip("|").split("|")][1:]
            for line in capsys.readouterr().out.splitlines()[2:]]
    assert rows[0] == ["0%", "0%"]
    assert all(float(cell.rstrip("%")) > 0 for cell in rows[1])


def test_latent_drift_refuses_a_world_without_the_prompts(demo, tmp_path, capsys):
    bundle, _ = demo
    model = str(bundle / "vino.safetensors")
    assert latent_drift.main([model, model, "--data", str(tmp_path)]) == 2
    assert f"--data {tmp_path}: expected a world split with a manifest.jsonl" in capsys.readouterr().err
    demo_world = str(ROOT / "vino_model/embedded/demo")
    assert latent_drift.main([model, model, "--data", demo_world, "--prompts", "2"]) == 2
    assert "fewer than 2 prompts of t2i, t2v" in capsys.readouterr().err
    assert latent_drift.main([model, model, "--data", demo_world, "--frames", "0"]) == 2
    assert "--frames 0: expected a whole number, at least 1" in capsys.readouterr().err
