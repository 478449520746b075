"""ZeRO-2 over four CPU ranks under torchrun: the optimizer state splits four ways, and a checkpoint refuses,
clearly and without harm, to resume on another number of ranks."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from training.world import write_split
from vino_model.tiny import make_tiny_bundle

ROOT = Path(__file__).resolve().parents[1]
RENDEZVOUS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(ranks: int, out: Path, folder: Path, steps: int) -> subprocess.CompletedProcess:
    overrides = {
        "run.out": str(out), "run.steps": steps, "model.qwen": str(folder / "bundle" / "qwen3vl"),
        "model.vae": str(folder / "bundle" / "vae.safetensors"), "data.manifest": [str(folder / "world" / "manifest.jsonl")],
        "data.cache": str(folder / "cache"), "data.area": 1024, "data.frames": [1, 5], "data.batch_size": 2,
        "optim.warmup_steps": 1, "optim.schedule": "constant", "checkpoint.every": 2, "eval.every": 0,
        "samples.every": 0, "log.every": 1, "log.progress": False,
    }
    env = {k: v for k, v in os.environ.items() if k not in RENDEZVOUS}
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks), "--master-port", str(free_port()),
         "-m", "training.run", str(ROOT / "training" / "configs" / "tiny" / "stage0.toml"),
         *(f"{k}={json.dumps(v)}" for k, v in overrides.items())],
        cwd=ROOT, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)


def test_four_ranks_split_the_optimizer_and_refuse_to_resume_on_two(tmp_path):
    write_split(str(tmp_path / "world"), per_task=2, width=32, height=32, frames=5)
    make_tiny_bundle(tmp_path / "bundle")
    out = tmp_path / "run"

    four = torchrun(4, out, tmp_path, steps=3)
    assert four.returncode == 0, four.stderr[-3000:]
    log = [json.loads(line) for line in (out / "logs" / "train.jsonl").read_text().splitlines()]
    assert log[0]["event"] == "start" and log[0]["ranks"] == 4
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3]
    checkpoint = out / "checkpoints" / (out / "checkpoints" / "latest").read_text().strip()
    assert checkpoint.name == "step-00000003"
    partitions = sorted((checkpoint / "deepspeed").glob("*zero_pp_rank_*_optim_states.pt"))
    assert len(partitions) == 4  # ZeRO-2: each rank keeps a quarter of the fp32 weights and Adam moments
    held = [sum(t.numel() for t in torch.load(p, weights_only=False)["optimizer_state_dict"]["single_partition_of_fp32_groups"])
            for p in partitions]
    trained = sum(v.numel() for k, v in load_file(out / "export" / "vino.safetensors").items()
                  if k.startswith("transformer."))
    assert len(set(held)) == 1 and trained <= sum(held) < trained + 64  # four equal parts (alignment padding aside)

    before = {p.name: p.stat().st_mtime_ns for p in checkpoint.rglob("*")}
    two = torchrun(2, out, tmp_path, steps=5)
    assert two.returncode != 0
    assert f"checkpoint {checkpoint} was written by 4 ranks and this run has 2" in two.stderr
    assert "Traceback" not in two.stderr.split("error: checkpoint")[0]  # our error, not DeepSpeed's
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-00000003"
    assert {p.name: p.stat().st_mtime_ns for p in checkpoint.rglob("*")} == before
