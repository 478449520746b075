"""Opt-in speed-ups, each an approximation or a compile step the user chooses.

- `fp8_linears(model)`: the blocks' linear layers in FP8 (e4m3 weights with a scale per output
  channel, activations scaled per row at run time) through torch._scaled_mm on Hopper GPUs.
- `compile_blocks(model)`: torch.compile of each repeated block (one graph shared by all blocks
  of a kind), fusing the element-wise work between the matrix products.
- `load_compile_cache(path)`, `save_compile_cache(path)`: what torch.compile made in one process (its
  compiled graphs and kernels) kept in a file, so that the next process on the same kind of machine
  and the same torch skips compiling them again.
"""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import torch
from torch import nn

from .files import atomic_output

log = logging.getLogger(__name__)
FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0


class FP8Linear(nn.Module):
    def __init__(self, linear: nn.Linear):
        super().__init__()
        weight = linear.weight.detach()
        scale = weight.abs().amax(dim=1).float().clamp(min=1e-12) / FP8_MAX  # [out]
        self.register_buffer("weight", (weight.float() / scale[:, None]).to(FP8))
        self.register_buffer("scale", scale[None])  # [1, out]
        self.bias = linear.bias
        self.out_features = linear.out_features

    def forward(self, x):
        rows = x.reshape(-1, x.shape[-1])
        row_scale = rows.abs().amax(dim=1, keepdim=True).float().clamp(min=1e-12) / FP8_MAX  # [M, 1]
        quantised = (rows.float() / row_scale).to(FP8)
        out = torch._scaled_mm(quantised, self.weight.t(), scale_a=row_scale, scale_b=self.scale,
                               out_dtype=x.dtype, use_fast_accum=True)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)


def fp8_linears(model) -> int:
    """Swap every linear layer inside the double and single blocks for FP8Linear; returns how many."""
    count = 0
    for blocks in (model.transformer_blocks, model.single_transformer_blocks):
        for block in blocks:
            for name, module in list(block.named_modules()):
                for child_name, child in list(module.named_children()):
                    if isinstance(child, nn.Linear) and child.in_features % 16 == 0 and child.out_features % 16 == 0:
                        setattr(module, child_name, FP8Linear(child))
                        count += 1
    return count


def compile_blocks(model, **options) -> None:
    for blocks in (model.transformer_blocks, model.single_transformer_blocks):
        for block in blocks:
            block.compile(**options)


def load_compile_cache(path) -> bool:
    """Put the compile artifacts in `path` (save_compile_cache's file) in place before anything compiles; without
    it, `path`.gz, the file gzipped (stage 3's came to 118.7 MB, too much to carry to a lent machine whole). A file
    that is missing or that this torch cannot read costs only the compiling it would have saved: the log says so."""
    path = Path(path)
    zipped = path.with_name(path.name + ".gz")
    if not path.is_file() and zipped.is_file():
        path = zipped
    if not path.is_file():
        log.info("compile cache %s: not there yet; this run compiles from scratch and writes it", path)
        return False
    try:  # torch logs its own reason and returns None for a file it cannot read
        data = gzip.decompress(path.read_bytes()) if path == zipped else path.read_bytes()
        loaded = torch.compiler.load_cache_artifacts(data)
    except Exception as error:  # noqa: BLE001 - another torch's or a damaged file: compile as without it
        loaded, reason = None, f" ({type(error).__name__}: {error})"
    else:
        reason = ""
    if loaded is None:
        log.warning("compile cache %s could not be read%s; compiling from scratch", path, reason)
        return False
    log.info("compile cache %s: %.1f MB of compiled graphs loaded", path, path.stat().st_size / 1e6)
    return True


def save_compile_cache(path) -> int:
    """Write what this process compiled (and what load_compile_cache loaded) to `path`, whole or not at all;
    returns the bytes written (0: nothing compiled, nothing written)."""
    artifacts = torch.compiler.save_cache_artifacts()
    if not artifacts:
        return 0
    data = artifacts[0]
    with atomic_output(path) as partial:
        partial.write_bytes(data)
    return len(data)


def compiled_graphs() -> dict:
    """This process's compiled graphs so far: how many came from a compile cache, how many were compiled (and how
    many of those no cache can keep)."""
    from torch._dynamo.utils import counters

    autograd = counters["aot_autograd"]
    return {"from_cache": autograd["autograd_cache_hit"], "compiled": autograd["autograd_cache_miss"],
            "uncacheable": autograd["autograd_cache_bypass"]}
