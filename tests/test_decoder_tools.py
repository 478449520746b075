"""benchmarks/vae_sizes.py and benchmarks/redecode.py: how a decoder changes what the benchmark measures."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from redecode import main as redecode_main  # noqa: E402
from vae_sizes import diameters  # noqa: E402
from vae_sizes import main as vae_sizes_main  # noqa: E402

from training.manifest import load_media  # noqa: E402
from training.world import SIZES, write_split  # noqa: E402
from vino_model.preprocess import tensor_to_frames  # noqa: E402
from vino_model.vae import make_tiny_vae  # noqa: E402


def test_renders_measure_their_size_class_and_an_outward_smear_measures_larger(tmp_path):
    records = write_split(str(tmp_path), per_task=6, width=128, height=128, tasks=("t2i",), split="heldout")
    checked = 0
    for record in records:
        frames = load_media(record.target)
        objects = record.meta["scene"]["objects"]
        found = diameters(frames, objects)
        for size, diameter in found:
            assert diameter == pytest.approx(SIZES[size], rel=0.03)
        if len(found) != len(objects) or len(objects) > 1:
            continue
        coloured = np.ptp(frames[0].astype(int), axis=-1) > 40  # the object; the greys have no saturation
        smeared = frames.copy()
        ring = np.zeros_like(coloured)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                ring |= np.roll(coloured, (dy, dx), axis=(0, 1))
        smeared[0][ring & ~coloured] = (0.5 * frames[0][ring & ~coloured] + 0.5 * np.asarray(objects[0]["rgb"]))
        assert diameters(smeared, objects)[0][1] > found[0][1] * 1.03
        checked += 1
    assert checked >= 1


def test_redecode_decodes_saved_latents_as_the_pipeline_does(tmp_path):
    vae = make_tiny_vae(seed=3)
    vae.save(tmp_path / "vae.safetensors")
    latents = {"0_t2i": torch.randn(1, 16, 1, 4, 4), "1_t2v": torch.randn(1, 16, 2, 4, 4)}
    for name, value in latents.items():
        save_file({"latents": value}, str(tmp_path / f"{name}.latents.safetensors"))
    assert redecode_main(["--vae", str(tmp_path / "vae.safetensors"), "--latents", str(tmp_path),
                          "--out", str(tmp_path / "out")]) == 0
    with torch.no_grad():
        expected = {name: tensor_to_frames(vae.decode(value).float()) for name, value in latents.items()}
    assert np.array_equal(load_media(tmp_path / "out" / "0_t2i.png"), expected["0_t2i"])
    clip = load_media(tmp_path / "out" / "1_t2v.npz")
    assert clip.shape == (5, 32, 32, 3) and np.array_equal(clip, expected["1_t2v"])


def test_redecode_without_latents_names_the_folder(tmp_path, capsys):
    make_tiny_vae().save(tmp_path / "vae.safetensors")
    assert redecode_main(["--vae", str(tmp_path / "vae.safetensors"), "--latents", str(tmp_path / "empty"),
                          "--out", str(tmp_path / "out")]) == 2
    assert "no *.latents.safetensors files" in capsys.readouterr().err


def test_vae_sizes_scores_each_check_after_the_round_trip_and_ground_truth_passes_them_all(tmp_path, capsys):
    """The per-check ceiling: ground truth passes every check of `training.bench`; an untrained VAE's blur fails
    some."""
    write_split(str(tmp_path / "world"), per_task=3, width=64, height=64, frames=5, tasks=("t2v",), split="heldout")
    make_tiny_vae(seed=3).save(tmp_path / "vae.safetensors")
    vae_sizes_main(["--data", str(tmp_path / "world"), "--tasks", "t2v", "--samples", "3",
                    "--vae", str(tmp_path / "vae.safetensors")])
    table = capsys.readouterr().out.split("checks (mean)")[1].splitlines()
    checks = table[0].split()
    assert {"color", "subject", "steadiness"} <= set(checks)
    truth, untrained = ([float(v) for v in line.split()[-len(checks):]] for line in table[1:3])
    assert table[1].startswith("ground truth") and truth == [1.0] * len(checks)
    assert min(untrained) < 1.0
