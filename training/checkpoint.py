"""Checkpoints that resume exactly after a kill, and the export Load VINO reads.

RUN/checkpoints/step-00000100/
    deepspeed/          trained weights, ZeRO optimizer partitions, schedule (engine.save_checkpoint)
    trainer.json        step, data position, counters
    rng-rank{r}.pt      each rank's torch / accelerator / numpy / python RNG states
    ema.pt              EMA weights, when on
RUN/checkpoints/latest  the name of the newest complete checkpoint

A checkpoint is written under a hidden name and renamed once every rank has finished; `latest` is
replaced atomically after that, so a kill at any moment leaves the previous checkpoint in charge.
Frozen weights (the VLM, a frozen MMDiT) are not stored: they come from the stage's model.init again.
Resuming needs the number of ranks that wrote the checkpoint (a clear error otherwise).
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from deepspeed.accelerator import get_accelerator

from vino_model.checkpoint import save_vino
from vino_model.errors import VinoInputError
from vino_model.media import atomic_output
from vino_model.pipeline import parse_dtype

from .engine import barrier

LATEST = "latest"
TAG = "deepspeed"


def step_name(step: int) -> str:
    return f"step-{step:08d}"


def latest(folder: Path) -> Path | None:
    pointer = folder / LATEST
    if not pointer.is_file():
        return None
    path = folder / pointer.read_text().strip()
    if not path.is_dir():
        raise VinoInputError(f"{pointer} names {path.name}, which is missing; remove {pointer} to start over")
    return path


def rng_state() -> dict:
    """Plain tensors and tuples, so the file loads with weights_only=True."""
    accelerator = get_accelerator()
    name, keys, position, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "accelerator": accelerator.get_rng_state() if accelerator.device_name() != "cpu" else None,
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss),
        "python": random.getstate(),
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["accelerator"] is not None:
        get_accelerator().set_rng_state(state["accelerator"])
    name, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    random.setstate(state["python"])


def save(engine, folder: Path, step: int, trainer: dict, ema, keep: int, rank: int) -> Path:
    """Write checkpoint `step` (every rank calls this), point `latest` at it, keep the newest `keep`."""
    final = folder / step_name(step)
    partial = folder / f".{final.name}.partial"
    if rank == 0:
        for stale in folder.glob(".step-*.partial"):  # left by a kill while saving
            shutil.rmtree(stale)
        folder.mkdir(parents=True, exist_ok=True)
    barrier()
    engine.save_checkpoint(str(partial), tag=TAG, save_latest=False, exclude_frozen_parameters=True)
    torch.save(rng_state(), partial / f"rng-rank{rank}.pt")
    if rank == 0:
        (partial / "trainer.json").write_text(json.dumps({"step": step, **trainer}))
        if ema is not None:
            torch.save(ema.state_dict(), partial / "ema.pt")
    barrier()
    if rank == 0:
        shutil.rmtree(final, ignore_errors=True)  # a re-run after a kill may reach the same step again
        partial.rename(final)
        with atomic_output(folder / LATEST) as pointer:
            pointer.write_text(final.name)
        for old in sorted(folder.glob("step-*"))[:-keep]:
            shutil.rmtree(old)
    barrier()
    return final


def load(engine, path: Path, ema, rank: int, world: int) -> dict:
    """Restore engine, RNG and EMA from checkpoint `path`; returns trainer.json."""
    written_by = len(list(path.glob("rng-rank*.pt")))
    if written_by and written_by != world:  # ZeRO's optimizer partitions are cut for the ranks that wrote them
        raise VinoInputError(
            f"checkpoint {path} was written by {written_by} ranks and this run has {world}; resume it with "
            f"{written_by} (torchrun --nproc-per-node {written_by} ...), or give run.out a new folder to start over")
    loaded, _ = engine.load_checkpoint(str(path), tag=TAG, load_module_strict=False)
    if loaded is None:
        raise VinoInputError(f"checkpoint {path} has no DeepSpeed state under {TAG}/")
    rng_file = path / f"rng-rank{rank}.pt"
    if not rng_file.is_file():
        raise VinoInputError(f"checkpoint {path} has no {rng_file.name}; resume with the number of ranks that wrote it")
    set_rng_state(torch.load(rng_file, weights_only=True))
    if ema is not None:
        if not (path / "ema.pt").is_file():
            raise VinoInputError(f"checkpoint {path} has no ema.pt but optim.ema is on")
        ema.load_state_dict(torch.load(path / "ema.pt", weights_only=True))
    return json.loads((path / "trainer.json").read_text())


def export(state: dict, config, path: Path, dtype: str) -> Path:
    """Our safetensors layout (`transformer.*`, `mm_encoder.*`, config in the metadata), atomically."""
    cast = parse_dtype(dtype)
    return save_vino(path, {k: v.detach().to("cpu", cast) for k, v in state.items()}, config)
