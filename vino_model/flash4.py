"""FlashAttention-4 (the CuTe kernels of the `flash-attn-4` package) as an exact attention kernel.

`attention="flash4"` is opt-in: it needs the package and a Hopper or Blackwell GPU, and serves inference
(the sampler's unpadded forwards). Padded batches and anything that needs gradients keep torch's SDPA.
The kernel is wrapped as a torch custom op, so torch.compile keeps it as one opaque call between the
fused element-wise work of each block.
"""

from __future__ import annotations

import torch

from .errors import VinoInputError


def unavailable(device) -> str | None:
    """Why flash4 cannot run on `device`, or None when it can."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return f"it runs on CUDA GPUs only, and the device is {device}"
    major, _ = torch.cuda.get_device_capability(device)
    if major not in (9, 10, 11):
        name = torch.cuda.get_device_name(device)
        return f"it needs a Hopper or Blackwell GPU (compute capability 9.x-11.x); {name} is {major}.x"
    try:
        import flash_attn.cute  # noqa: F401
    except ImportError as error:
        return f"the flash-attn-4 package does not import ({error}); install it with `pip install flash-attn-4`"
    return None


def require(device) -> None:
    reason = unavailable(device)
    if reason is not None:
        raise VinoInputError(f"attention 'flash4' cannot be used: {reason}; pick 'auto' or 'cudnn'")


@torch.library.custom_op("vino::flash4_attention", mutates_args=())
def flash4_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q, k, v: [B, S, H, D], no mask; returns softmax(q k^T / sqrt(D)) v as [B, S, H, D]."""
    from flash_attn.cute import flash_attn_func

    out, _ = flash_attn_func(q, k, v)
    return out


@flash4_attention.register_fake
def _(q, k, v):
    return torch.empty_like(q)
