"""ZeRO-2 over four CPU ranks under torchrun: the optimizer state splits four ways, and a run goes on with fewer
or more ranks than wrote its checkpoint, every fp32 weight and Adam moment carried over."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from training.checkpoint import full_state, zero_partitions
from training.world import write_split
from vino_model.tiny import make_tiny_bundle

ROOT = Path(__file__).resolve().parents[1]
RENDEZVOUS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(ranks: int, out: Path, folder: Path, steps: int, keep: int = 1) -> subprocess.CompletedProcess:
    overrides = {
        "run.out": str(out), "run.steps": steps, "model.qwen": str(folder / "bundle" / "qwen3vl"),
        "model.vae": str(folder / "bundle" / "vae.safetensors"), "data.manifest": [str(folder / "world" / "manifest.jsonl")],
        "data.cache": str(folder / "cache"), "data.area": 1024, "data.frames": [1, 5], "data.batch_size": 2,
        "optim.warmup_steps": 1, "optim.schedule": "constant", "checkpoint.every": 2, "checkpoint.keep": keep,
        "eval.every": 0, "samples.every": 0, "log.every": 1, "log.progress": False,
    }
    env = {k: v for k, v in os.environ.items() if k not in RENDEZVOUS}
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks), "--master-port", str(free_port()),
         "-m", "training.run", str(ROOT / "training" / "configs" / "tiny" / "stage0.toml"),
         *(f"{k}={json.dumps(v)}" for k, v in overrides.items())],
        cwd=ROOT, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)


def log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "logs" / "train.jsonl").read_text().splitlines()]


def optimizer_state(checkpoint: Path) -> dict[tuple[str, str], torch.Tensor]:
    partitions = zero_partitions(checkpoint)
    names = {name: None for part in partitions for mapping in part["param_slice_mappings"] for name in mapping}
    return {(name, key): full_state(partitions, name, key).detach().clone() for name in names
            for key in ("fp32", "exp_avg", "exp_avg_sq")}


def test_four_ranks_split_the_optimizer_and_go_on_with_two_then_four_again(tmp_path):
    write_split(str(tmp_path / "world"), per_task=2, width=32, height=32, frames=5)
    make_tiny_bundle(tmp_path / "bundle")
    out = tmp_path / "run"

    four = torchrun(4, out, tmp_path, steps=3)
    assert four.returncode == 0, four.stderr[-3000:]
    assert log(out)[0]["event"] == "start" and log(out)[0]["ranks"] == 4
    assert [r["step"] for r in log(out) if "loss" in r] == [1, 2, 3]
    checkpoint = out / "checkpoints" / "step-00000003"
    assert (out / "checkpoints" / "latest").read_text().strip() == checkpoint.name
    partitions = zero_partitions(checkpoint)
    assert len(partitions) == 4  # ZeRO-2: each rank keeps a quarter of the fp32 weights and Adam moments
    held = [sum(t.numel() for t in part["single_partition_of_fp32_groups"]) for part in partitions]
    trained = sum(v.numel() for k, v in load_file(out / "export" / "vino.safetensors").items()
                  if k.startswith("transformer."))
    assert len(set(held)) == 1 and trained <= sum(held) < trained + 64  # four equal parts (alignment padding aside)
    written_by_four = optimizer_state(checkpoint)
    assert len(written_by_four) == 3 * len([k for k in load_file(out / "export" / "vino.safetensors")
                                             if k.startswith("transformer.")])

    two = torchrun(2, out, tmp_path, steps=4, keep=10)  # rewrites step 3 for two ranks, then trains step 4
    assert two.returncode == 0, two.stderr[-3000:]
    resumed = [r for r in log(out) if r.get("event") == "resume"]
    assert resumed == [{**resumed[0], "step": 3, "ranks": 2, "resharded_from": 4}]
    assert [r["step"] for r in log(out) if "loss" in r] == [1, 2, 3, 4]
    assert len(list((checkpoint / "deepspeed").glob("*zero_pp_rank_*_optim_states.pt"))) == 2
    written_by_two = optimizer_state(checkpoint)
    assert written_by_two.keys() == written_by_four.keys()
    assert all(torch.equal(written_by_two[k], written_by_four[k]) for k in written_by_four)  # bit for bit

    again = torchrun(4, out, tmp_path, steps=5)
    assert again.returncode == 0, again.stderr[-3000:]
    assert [r.get("resharded_from") for r in log(out) if r.get("event") == "resume"] == [4, 2]
    losses = [r["loss"] for r in log(out) if "loss" in r]
    assert [r["step"] for r in log(out) if "loss" in r] == [1, 2, 3, 4, 5] and all(0 < x < 10 for x in losses)


def test_a_kill_while_a_checkpoint_replaces_one_of_the_same_step_keeps_the_old_one(tmp_path):
    from training.checkpoint import latest

    folder = tmp_path / "checkpoints"
    (folder / ".step-00000003.replaced").mkdir(parents=True)  # stepped aside; the new one never got its name
    (folder / ".step-00000003.replaced" / "trainer.json").write_text('{"step": 3}')
    (folder / "latest").write_text("step-00000003")
    found = latest(folder)
    assert found == folder / "step-00000003" and (found / "trainer.json").read_text() == '{"step": 3}'
    assert not (folder / ".step-00000003.replaced").exists()
