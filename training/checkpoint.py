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
A run may resume on another number of ranks: each parameter's fp32 weights and Adam moments are put together
from the partitions of the ranks that wrote the checkpoint and cut again for the new ones.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from deepspeed.accelerator import get_accelerator
from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
from deepspeed.runtime.zero.config import ZeroStageEnum
from deepspeed.utils.tensor_fragment import fragment_address

from vino_model.checkpoint import save_vino
from vino_model.errors import VinoInputError
from vino_model.media import atomic_output
from vino_model.pipeline import parse_dtype

from .engine import barrier

LATEST = "latest"
TAG = "deepspeed"
# What a ZeRO-1/2 partition file pickles besides tensors and plain containers (so it loads with weights_only=True)
ZERO_STATE_GLOBALS = [fragment_address, ZeroStageEnum, LossScaler, DynamicLossScaler]


def step_name(step: int) -> str:
    return f"step-{step:08d}"


def latest(folder: Path) -> Path | None:
    pointer = folder / LATEST
    if not pointer.is_file():
        return None
    path = folder / pointer.read_text().strip()
    replaced = folder / f".{path.name}.replaced"
    if not path.is_dir() and replaced.is_dir():  # a kill while a new checkpoint of the same step took its place
        replaced.rename(path)
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
        # The same step again (a re-run after a kill, or a resume on other ranks): the old one steps aside, and
        # until the new one is in place `latest` finds it there
        replaced = folder / f".{final.name}.replaced"
        shutil.rmtree(replaced, ignore_errors=True)
        if final.is_dir():
            final.rename(replaced)
        partial.rename(final)
        shutil.rmtree(replaced, ignore_errors=True)
        with atomic_output(folder / LATEST) as pointer:
            pointer.write_text(final.name)
        for old in sorted(folder.glob("step-*"))[:-keep]:
            shutil.rmtree(old)
    barrier()
    return final


def written_by(path: Path) -> int:
    """How many ranks wrote checkpoint `path` (each leaves its RNG state)."""
    return len(list(path.glob("rng-rank*.pt")))


def zero_partitions(path: Path) -> list[dict]:
    """The optimizer partitions of each rank that wrote checkpoint `path`, in rank order, memory-mapped (a
    tensor is read when used)."""
    files = {}
    for file in (path / TAG).glob("*zero_pp_rank_*_mp_rank_00_optim_states.pt"):
        rank = int(re.search(r"zero_pp_rank_(\d+)_", file.name).group(1))
        files[rank] = file
    if sorted(files) != list(range(written_by(path))):
        raise VinoInputError(f"checkpoint {path} holds ZeRO partitions of ranks {sorted(files)}; expected one for each "
                             f"of the {written_by(path)} ranks that wrote it")
    with torch.serialization.safe_globals(ZERO_STATE_GLOBALS):
        return [torch.load(files[r], map_location="cpu", mmap=True, weights_only=True)["optimizer_state_dict"]
                for r in sorted(files)]


def full_state(partitions: list[dict], name: str, key: str) -> torch.Tensor:
    """Parameter `name`'s flat fp32 master weights (key "fp32") or Adam moment ("exp_avg", "exp_avg_sq"), put
    together from its fragments in each rank's partition."""
    pieces = []
    for part in partitions:
        for group, mapping in enumerate(part["param_slice_mappings"]):
            if name in mapping:
                flat = part["single_partition_of_fp32_groups"][group] if key == "fp32" else \
                    part["base_optimizer_state"]["state"][group][key]
                pieces.append(flat.narrow(0, mapping[name].start, mapping[name].numel))
    if not pieces:
        raise VinoInputError(f"the checkpoint's optimizer state has no {name}; expected a checkpoint of this stage")
    return torch.cat(pieces)


@torch.no_grad()
def load_resharded(engine, path: Path) -> None:
    """Weights, schedule, fp32 master weights and Adam's moments and step from a checkpoint that another number of
    ranks wrote: each parameter is put together from the old partitions and cut again for this rank. Works on
    DeepSpeed's ZeRO-1/2 optimizer (its flat fp32 partitions and each parameter's `_hp_mapping`)."""
    zero = engine.optimizer
    if not hasattr(zero, "bit16_groups"):
        raise VinoInputError(f"checkpoint {path} was written by {written_by(path)} ranks; going on with another number "
                             "needs optim.zero_stage 1 or 2")
    engine.load_checkpoint(str(path), tag=TAG, load_module_strict=False, load_optimizer_states=False)
    partitions = zero_partitions(path)
    names = {param: name for name, param in engine.module.named_parameters()}
    step = partitions[0]["base_optimizer_state"]["state"][0]["step"]
    for params, flat in zip(zero.bit16_groups, zero.single_partition_of_fp32_groups):
        moments = {key: torch.zeros_like(flat) for key in ("exp_avg", "exp_avg_sq")}
        mine = [p for p in params if p._hp_mapping is not None]  # the parameters with a fragment on this rank
        for param in mine:
            within, at = param._hp_mapping.lp_fragment_address, param._hp_mapping.hp_fragment_address
            for key, target in (("fp32", flat), *moments.items()):
                full = full_state(partitions, names[param], key)
                target.narrow(0, at.start, at.numel).copy_(full.narrow(0, within.start, within.numel))
        zero.optimizer.state[flat] = {"step": step.clone() if torch.is_tensor(step) else step, **moments}
        for param in mine:  # what DeepSpeed links after its first step, so that safe_get_full_* work at once
            param._hp_mapping.set_optim_state_fragment(flat, zero.optimizer.state[flat])


def load(engine, path: Path, ema, rank: int, world: int) -> tuple[dict, bool]:
    """Restore engine, RNG and EMA from checkpoint `path`; returns trainer.json and whether another number of ranks
    wrote it (then each rank's RNG starts afresh: the caller seeds it)."""
    ranks = written_by(path)
    other = bool(ranks) and ranks != world
    if other and any((path / TAG).glob("*zero_pp_rank_*_optim_states.pt")):  # ZeRO cut them for the old ranks
        load_resharded(engine, path)
    else:  # this world's ZeRO partitions, or the whole optimizer state (ZeRO off)
        loaded, _ = engine.load_checkpoint(str(path), tag=TAG, load_module_strict=False)
        if loaded is None:
            raise VinoInputError(f"checkpoint {path} has no DeepSpeed state under {TAG}/")
        if not other:
            rng_file = path / f"rng-rank{rank}.pt"
            if not rng_file.is_file():
                raise VinoInputError(f"checkpoint {path} has no {rng_file.name}; expected one for each rank that wrote it")
            set_rng_state(torch.load(rng_file, weights_only=True))
    if ema is not None:
        if not (path / "ema.pt").is_file():
            raise VinoInputError(f"checkpoint {path} has no ema.pt but optim.ema is on")
        ema.load_state_dict(torch.load(path / "ema.pt", weights_only=True))
    return json.loads((path / "trainer.json").read_text()), other


def export(state: dict, config, path: Path, dtype: str) -> Path:
    """Our safetensors layout (`transformer.*`, `mm_encoder.*`, config in the metadata), atomically."""
    cast = parse_dtype(dtype)
    return save_vino(path, {k: v.detach().to("cpu", cast) for k, v in state.items()}, config)
