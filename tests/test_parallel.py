"""Sequence parallelism gives the one-device output: 2, 4 and 8 CPU processes over gloo, and the CLI under torchrun."""

import dataclasses
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from vino_model.config import preset
from vino_model.mmdit import VinoMMDiT
from vino_model.parallel import SequenceParallel

# The ranks split the heads: 8 divide over 2, 4 and 8 ranks (the 13B's 24 over 2, 3, 4, 6 and 8)
CFG = dataclasses.replace(preset("tiny").mmdit, num_heads=8)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def inputs():
    g = torch.Generator().manual_seed(0)
    refs = [[torch.randn(16, 1, 4, 6, generator=g)], [torch.randn(16, 1, 6, 6, generator=g), torch.randn(16, 5, 4, 4, generator=g)]]
    bounds = [torch.randn(1, 2, CFG.hidden, generator=g), torch.randn(2, 2, CFG.hidden, generator=g)]
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[0, 4:] = False
    return dict(latents=torch.randn(2, 16, 3, 6, 10, generator=g), timestep=torch.tensor([700.0, 100.0]),
                text=torch.randn(2, 6, CFG.text_dim, generator=g), text_mask=mask, references=refs, boundary=bounds,
                guidance=torch.full((2,), 1000.0))


def model():
    torch.manual_seed(0)
    return VinoMMDiT(CFG).eval()


def worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    net = model()
    net.sequence_parallel = SequenceParallel()
    with torch.no_grad():
        result = net(**inputs())
    if rank == 0:
        save_file({"out": result}, out)
    dist.destroy_process_group()


@pytest.mark.parametrize("world", [2, 4, 8])
def test_ranks_match_one(tmp_path, world):
    """Each rank holds a slice of the image stream, whose 78 tokens (the second sample's) split unevenly
    over 4 and 8 ranks."""
    with torch.no_grad():
        want = model()(**inputs())
    out = str(tmp_path / "sp.safetensors")
    mp.spawn(worker, args=(world, free_port(), out), nprocs=world)
    torch.testing.assert_close(load_file(out)["out"], want, atol=1e-5, rtol=1e-5)


def test_cli_under_torchrun_matches_one_process(tmp_path):
    from tiny_demo import write_demo

    bundle, tasks = write_demo(tmp_path / "demo")
    (tmp_path / "two.json").write_text(
        '[{"index": 0, "task": "t2v", "caption": "a square moves"},'
        f' {{"index": 1, "task": "tiv2v", "caption": "swap in Image 1", "ref_image_paths": ["{tmp_path}/demo/media/red_circle.png"],'
        f' "ref_video_path": "{tmp_path}/demo/media/clip.mp4"}}]'
    )
    common = ["--tasks", str(tmp_path / "two.json"), "--checkpoint", str(bundle / "vino.safetensors"), "--qwen",
              str(bundle / "qwen3vl"), "--vae", str(bundle / "vae.safetensors"), "--device", "cpu", "--width", "48",
              "--height", "32", "--frames", "5", "--steps", "2", "--save-latents", "--reference-mode", "mode"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "vino_model.generate", *common, "--out", str(tmp_path / "one")],
                   check=True, env=env, capture_output=True)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                    str(free_port()), "-m", "vino_model.generate", *common, "--out", str(tmp_path / "two")],
                   check=True, env=env, capture_output=True)
    for name in ("0_t2v", "1_tiv2v"):
        one = load_file(str(tmp_path / "one" / f"{name}.latents.safetensors"))["latents"]
        two = load_file(str(tmp_path / "two" / f"{name}.latents.safetensors"))["latents"]
        torch.testing.assert_close(two, one, atol=1e-4, rtol=1e-4)
    assert (tmp_path / "two" / "1_tiv2v.mp4").exists()
