"""Opt-in speed-ups, each an approximation or a compile step the user chooses.

- `fp8_linears(model)`: the blocks' linear layers in FP8 (e4m3 weights with a scale per output
  channel, activations scaled per row at run time) through torch._scaled_mm on Hopper GPUs.
- `compile_blocks(model)`: torch.compile of each repeated block (one graph shared by all blocks
  of a kind), fusing the element-wise work between the matrix products.
"""

from __future__ import annotations

import torch
from torch import nn

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
