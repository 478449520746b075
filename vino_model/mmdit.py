"""The HunyuanVideo MMDiT with VINO's interleaved image stream.

Parameter names follow the public diffusers layout (`transformer.*` in the official vino.ckpt), so
the official weights and diffusers' `transformer/` folder load without renaming.

Image stream of one sample (prompt order: images, then the video):
    [start_1, patch(ref_1), end_1, start_2, patch(ref_2), end_2, ..., patch(noisy latent)]
Joint attention sees [image stream, text tokens]; only the image stream gets 3D RoPE, and only the
noisy tokens (the tail) leave the final layer.
"""

from __future__ import annotations

import functools
import math
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import MMDiTConfig
from .errors import VinoInputError
from .offload import copy_ahead
from .parallel import SequenceParallel

ATTENTION_BACKENDS = ("auto", "math", "flash", "efficient", "cudnn", "flash4")


# ---------------------------------------------------------------- attention and RoPE


def sdpa_context(backend: str):
    """Pin torch's SDPA to one kernel family; 'auto' lets torch choose (as does 'flash4' for what it leaves to SDPA)."""
    if backend in ("auto", "flash4"):
        return nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    kernels = {
        "math": SDPBackend.MATH,
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
    }
    if backend not in kernels:
        raise VinoInputError(f"attention backend {backend!r} is unknown; expected one of {ATTENTION_BACKENDS}")
    return sdpa_kernel(kernels[backend])


def check_attention(backend: str, device) -> None:
    """A clear error, before anything loads, for an attention backend that is unknown or cannot run on `device`."""
    if backend not in ATTENTION_BACKENDS:
        raise VinoInputError(f"attention backend {backend!r} is unknown; expected one of {ATTENTION_BACKENDS}")
    if backend == "flash4":
        from .flash4 import require

        require(device)


def attention(q, k, v, key_mask=None, flash4: bool = False):
    """q, k, v: [B, S, H, D]; key_mask: [B, S] bool (True = attend) or None. Returns [B, S, H*D].

    flash4: unmasked attention without gradients runs FlashAttention-4 (vino_model.flash4); the rest SDPA.
    """
    if flash4 and key_mask is None and not torch.is_grad_enabled():
        from .flash4 import flash4_attention

        return flash4_attention(q, k, v).flatten(2)
    mask = None if key_mask is None else key_mask[:, None, None, :]
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
    return out.transpose(1, 2).flatten(2)


@dataclass
class AttentionContext:
    """What every block's attention needs besides its own tensors."""

    rope: torch.Tensor  # the rotations of this rank's image tokens: [B, N, head_dim / 2, 2] (cos, sin)
    key_mask: torch.Tensor | None  # [B, N_image_total + L] bool, None when nothing is padded
    parallel: SequenceParallel | None = None
    flash4: bool = False  # unmasked inference attention through FlashAttention-4


def joint_attention(img_qkv, txt_qkv, ctx: AttentionContext):
    """Attention over [image stream, text]. img_qkv / txt_qkv: (q, k, v) each [B, S, H, D].

    Returns the image and text outputs, [B, N, H*D] and [B, L, H*D]. Under sequence parallelism the
    image tensors hold this rank's tokens and attention runs over all tokens with this rank's heads.
    """
    sp = ctx.parallel
    if sp is not None:
        img_qkv = [sp.tokens_to_heads(x) for x in img_qkv]
        txt_qkv = [sp.my_heads(x) for x in txt_qkv]
    n_img = img_qkv[0].shape[1]
    out = attention(*(torch.cat([i, t], dim=1) for i, t in zip(img_qkv, txt_qkv)), ctx.key_mask, ctx.flash4)
    img, txt = out[:, :n_img], out[:, n_img:]
    if sp is None:
        return img, txt
    heads = img_qkv[0].shape[2]
    img = sp.heads_to_tokens(img.unflatten(-1, (heads, -1))).flatten(2)
    txt = sp.all_heads(txt.unflatten(-1, (heads, -1))).flatten(2)
    return img, txt


def rope_tables(positions: torch.Tensor, axes: tuple[int, ...], theta: float) -> torch.Tensor:
    """positions: [..., 3] (t, h, w) -> the rotation (cos, sin) of each (real, imag) pair: [..., head_dim / 2, 2],
    float32. Real rather than complex numbers, so torch.compile fuses the rotation and lets its sizes vary."""
    angles = []
    for axis, dim in enumerate(axes):
        inv_freq = 1.0 / theta ** (torch.arange(0, dim, 2, device=positions.device, dtype=torch.float64) / dim)
        angles.append(positions[..., axis, None].double() * inv_freq)
    angle = torch.cat(angles, dim=-1)
    return torch.stack([angle.cos(), angle.sin()], dim=-1).float()


def apply_rope(x, rotation):
    """x: [B, S, H, D] with interleaved (real, imag) pairs; rotation: [S, D/2, 2] or [B, S, D/2, 2] (cos, sin).
    The complex product of each pair with its rotation, computed in float32."""
    if rotation.dim() == 3:
        rotation = rotation[None]
    real, imag = x.float().unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = rotation[:, :, None].unbind(-1)
    return torch.stack([real * cos - imag * sin, real * sin + imag * cos], dim=-1).flatten(-2).to(x.dtype)


# ---------------------------------------------------------------- small layers


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype) * self.weight


class Projection(nn.Module):
    """Linear then activation: the `net.0.proj` of a feed-forward."""

    def __init__(self, dim_in: int, dim_out: int, activation):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out)
        self.activation = activation

    def forward(self, x):
        return self.activation(self.proj(x))


class FeedForward(nn.Module):
    def __init__(self, dim: int, ratio: float, activation):
        super().__init__()
        inner = int(dim * ratio)
        # Indices 0 and 2 match the public key names (`ff.net.0.proj`, `ff.net.2`); 1 held dropout.
        self.net = nn.ModuleList([Projection(dim, inner, activation), nn.Identity(), nn.Linear(inner, dim)])

    def forward(self, x):
        return self.net[2](self.net[0](x))


def gelu_tanh(x):
    return F.gelu(x, approximate="tanh")


def timestep_features(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features [cos | sin] of t: [B] -> [B, dim] float32."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angle = t.float()[:, None] * freqs[None]
    return torch.cat([angle.cos(), angle.sin()], dim=-1)


class MLPEmbedder(nn.Module):
    """linear_1 -> SiLU -> linear_2 (timestep, guidance and pooled-text embedders)."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.linear_1 = nn.Linear(dim_in, dim_out)
        self.linear_2 = nn.Linear(dim_out, dim_out)

    def forward(self, x):
        return self.linear_2(F.silu(self.linear_1(x.to(self.linear_1.weight.dtype))))


class AdaModulation(nn.Module):
    """`norm*.linear`: SiLU(temb) -> chunks of shift/scale/gate vectors."""

    def __init__(self, dim: int, chunks: int):
        super().__init__()
        self.chunks = chunks
        self.linear = nn.Linear(dim, chunks * dim)

    def forward(self, temb):
        return self.linear(F.silu(temb)).unsqueeze(1).chunk(self.chunks, dim=-1)  # each [B, 1, D]


def modulate(x, shift, scale):
    return F.layer_norm(x, (x.shape[-1],), eps=1e-6) * (1 + scale) + shift


# ---------------------------------------------------------------- text path: the token refiner


class TimeTextEmbed(nn.Module):
    def __init__(self, hidden: int, pooled_dim: int, guidance: bool = False):
        super().__init__()
        self.timestep_embedder = MLPEmbedder(256, hidden)
        self.text_embedder = MLPEmbedder(pooled_dim, hidden)
        self.guidance_embedder = MLPEmbedder(256, hidden) if guidance else None


class RefinerAttention(nn.Module):
    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.heads = heads
        self.to_q, self.to_k, self.to_v = (nn.Linear(hidden, hidden) for _ in range(3))
        self.to_out = nn.ModuleList([nn.Linear(hidden, hidden)])

    def forward(self, x, mask):
        q, k, v = (proj(x).unflatten(-1, (self.heads, -1)).transpose(1, 2) for proj in (self.to_q, self.to_k, self.to_v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.to_out[0](out.transpose(1, 2).flatten(2))


class RefinerBlock(nn.Module):
    def __init__(self, hidden: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden, eps=1e-6)
        self.attn = RefinerAttention(hidden, heads)
        self.norm2 = nn.LayerNorm(hidden, eps=1e-6)
        self.ff = FeedForward(hidden, mlp_ratio, F.silu)
        self.norm_out = AdaModulation(hidden, 2)

    def forward(self, x, temb, mask):
        gate_msa, gate_mlp = self.norm_out(temb)
        x = x + self.attn(self.norm1(x), mask) * gate_msa
        return x + self.ff(self.norm2(x)) * gate_mlp


class TokenRefiner(nn.Module):
    """`context_embedder`: projects the VLM conditioning and refines each prompt on its own."""

    def __init__(self, cfg: MMDiTConfig):
        super().__init__()
        self.time_text_embed = TimeTextEmbed(cfg.hidden, cfg.text_dim)
        self.proj_in = nn.Linear(cfg.text_dim, cfg.hidden)
        self.token_refiner = nn.Module()
        self.token_refiner.refiner_blocks = nn.ModuleList(
            RefinerBlock(cfg.hidden, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.num_refiner_blocks)
        )

    def forward(self, text, t_features, text_mask):
        """text: [B, L, text_dim]; text_mask: [B, L] bool or None (all valid)."""
        if text_mask is None:
            pooled, mask = text.mean(dim=1), None
        else:
            weights = text_mask.to(torch.float32)[..., None]
            pooled = ((text.float() * weights).sum(1) / weights.sum(1)).to(text.dtype)
            mask = (text_mask[:, None, :, None] & text_mask[:, None, None, :]).clone()  # [B, 1, L, L]
            mask[..., 0] = True  # a padded row still attends somewhere
        embed = self.time_text_embed
        temb = embed.timestep_embedder(t_features) + embed.text_embedder(pooled)
        x = self.proj_in(text)
        for block in self.token_refiner.refiner_blocks:
            x = block(x, temb, mask)
        return x


# ---------------------------------------------------------------- joint blocks


class JointAttention(nn.Module):
    """Double-block attention: separate projections for the image and text streams."""

    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.heads = heads
        head_dim = hidden // heads
        self.to_q, self.to_k, self.to_v = (nn.Linear(hidden, hidden) for _ in range(3))
        self.add_q_proj, self.add_k_proj, self.add_v_proj = (nn.Linear(hidden, hidden) for _ in range(3))
        self.norm_q, self.norm_k, self.norm_added_q, self.norm_added_k = (RMSNorm(head_dim) for _ in range(4))
        self.to_out = nn.ModuleList([nn.Linear(hidden, hidden)])
        self.to_add_out = nn.Linear(hidden, hidden)

    def forward(self, img, txt, ctx: AttentionContext):
        split = lambda x: x.unflatten(-1, (self.heads, -1))  # noqa: E731  [B, S, H, D]
        q = apply_rope(self.norm_q(split(self.to_q(img))), ctx.rope)
        k = apply_rope(self.norm_k(split(self.to_k(img))), ctx.rope)
        v = split(self.to_v(img))
        tq = self.norm_added_q(split(self.add_q_proj(txt)))
        tk = self.norm_added_k(split(self.add_k_proj(txt)))
        tv = split(self.add_v_proj(txt))
        img_out, txt_out = joint_attention((q, k, v), (tq, tk, tv), ctx)
        return self.to_out[0](img_out), self.to_add_out(txt_out)


class DoubleBlock(nn.Module):
    """`transformer_blocks.N`: image and text streams with their own weights, joint attention."""

    def __init__(self, cfg: MMDiTConfig):
        super().__init__()
        self.norm1 = AdaModulation(cfg.hidden, 6)
        self.norm1_context = AdaModulation(cfg.hidden, 6)
        self.attn = JointAttention(cfg.hidden, cfg.num_heads)
        self.ff = FeedForward(cfg.hidden, cfg.mlp_ratio, gelu_tanh)
        self.ff_context = FeedForward(cfg.hidden, cfg.mlp_ratio, gelu_tanh)

    def forward(self, img, txt, temb, ctx: AttentionContext):
        i_shift, i_scale, i_gate, i_shift2, i_scale2, i_gate2 = self.norm1(temb)
        t_shift, t_scale, t_gate, t_shift2, t_scale2, t_gate2 = self.norm1_context(temb)
        img_attn, txt_attn = self.attn(modulate(img, i_shift, i_scale), modulate(txt, t_shift, t_scale), ctx)
        img = img + img_attn * i_gate
        txt = txt + txt_attn * t_gate
        img = img + self.ff(modulate(img, i_shift2, i_scale2)) * i_gate2
        txt = txt + self.ff_context(modulate(txt, t_shift2, t_scale2)) * t_gate2
        return img, txt


class SingleAttention(nn.Module):
    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.heads = heads
        self.to_q, self.to_k, self.to_v = (nn.Linear(hidden, hidden) for _ in range(3))
        self.norm_q, self.norm_k = RMSNorm(hidden // heads), RMSNorm(hidden // heads)


class SingleBlock(nn.Module):
    """`single_transformer_blocks.N`: one stream [image, text], attention and MLP in parallel."""

    def __init__(self, cfg: MMDiTConfig):
        super().__init__()
        mlp_dim = int(cfg.hidden * cfg.mlp_ratio)
        self.norm = AdaModulation(cfg.hidden, 3)
        self.attn = SingleAttention(cfg.hidden, cfg.num_heads)
        self.proj_mlp = nn.Linear(cfg.hidden, mlp_dim)
        self.proj_out = nn.Linear(cfg.hidden + mlp_dim, cfg.hidden)

    def forward(self, x, n_img, temb, ctx: AttentionContext):
        """x: [B, n_img + L, D], the image stream (this rank's part of it) first."""
        shift, scale, gate = self.norm(temb)
        h = modulate(x, shift, scale)
        attn = self.attn
        split = lambda y: y.unflatten(-1, (attn.heads, -1))  # noqa: E731
        q, k, v = attn.norm_q(split(attn.to_q(h))), attn.norm_k(split(attn.to_k(h))), split(attn.to_v(h))
        img_qkv = (apply_rope(q[:, :n_img], ctx.rope), apply_rope(k[:, :n_img], ctx.rope), v[:, :n_img])
        img_out, txt_out = joint_attention(img_qkv, (q[:, n_img:], k[:, n_img:], v[:, n_img:]), ctx)
        out = torch.cat([img_out, txt_out], dim=1)
        return x + self.proj_out(torch.cat([out, gelu_tanh(self.proj_mlp(h))], dim=-1)) * gate


# ---------------------------------------------------------------- the interleaved sequence


@dataclass
class ImageStream:
    """The batched image stream: tokens, their RoPE tables and masks, where each noisy latent sits."""

    tokens: torch.Tensor  # [B, N, D]
    rope: torch.Tensor  # [B, N, head_dim / 2, 2] (cos, sin)
    mask: torch.Tensor | None  # [B, N] bool, None when every sample has the same length
    noisy_start: list[int]  # per sample: index of the first noisy token
    noisy_len: int


@dataclass
class StepCache:
    """First-block caching across sampling steps, for one conditioning branch (opt-in, approximate).

    Each step runs the first double block. When its change to the image stream differs from the one
    at the last fully computed step by less than `threshold` (relative mean absolute difference),
    the residual the other blocks added then is reused instead of running them.
    """

    threshold: float
    first: torch.Tensor | None = None  # the first block's residual at the last computed step
    rest: torch.Tensor | None = None  # what the remaining blocks added at that step (image stream)
    computed: int = 0
    skipped: int = 0

    def reuse(self, first: torch.Tensor) -> torch.Tensor | None:
        if self.first is not None and self.first.shape == first.shape:
            change = ((first - self.first).abs().mean() / self.first.abs().mean().clamp(min=1e-12)).item()
            if change < self.threshold:
                self.skipped += 1
                return self.rest
        self.first = first
        return None

    def store(self, rest: torch.Tensor) -> None:
        self.rest = rest
        self.computed += 1


@dataclass
class StreamLayout:
    """Everything about an image stream that depends only on shapes (cached per shape)."""

    rope: torch.Tensor  # [B, N, head_dim / 2, 2] (cos, sin)
    mask: torch.Tensor | None
    lengths: list[int]
    noisy_start: list[int]
    groups: list[list[tuple[int, int]]]  # the references (sample, index) of each shape, patchified together
    source: torch.Tensor | None  # [B, N]: each token's row in image_stream's table (None without references)


def stream_sources(reference_shapes, noisy_tokens: int, lengths, patch) -> tuple[list, torch.Tensor]:
    """Where each token of a batch's image stream comes from, so that the whole stream is one gather.

    The table is [a zero row (padding), the noisy tokens of every sample, each reference's start and end
    boundary tokens in batch order, the patchified references shape group by shape group]. Returns the groups
    (the (sample, index) of each reference of one latent shape, in first-seen order) and the [B, N] row index.
    """
    pt, ph, pw = patch
    batch = len(reference_shapes)
    group_of = {}
    for b, shapes in enumerate(reference_shapes):
        for r, shape in enumerate(shapes):
            group_of.setdefault(shape, []).append((b, r))
    groups = list(group_of.values())
    boundary_rows = 1 + batch * noisy_tokens
    ref_rows, row = {}, boundary_rows + 2 * sum(len(shapes) for shapes in reference_shapes)
    for shape, members in group_of.items():
        count = (shape[1] // pt) * (shape[2] // ph) * (shape[3] // pw)
        for b, r in members:
            ref_rows[b, r] = (row, count)
            row += count
    source = np.zeros((batch, max(lengths)), dtype=np.int64)  # numpy: a training batch is ~100 samples of a few
    boundary = boundary_rows                                     # small ops each, on the host
    for b, shapes in enumerate(reference_shapes):
        parts = []
        for r in range(len(shapes)):
            first, count = ref_rows[b, r]
            parts += [(boundary,), np.arange(first, first + count), (boundary + 1,)]
            boundary += 2
        parts.append(np.arange(1 + b * noisy_tokens, 1 + (b + 1) * noisy_tokens))
        source[b, : lengths[b]] = np.concatenate(parts)
    return groups, torch.from_numpy(source)


def reference_layout(reference_shapes, noisy_shape, patch):
    """RoPE positions [N, 3] of one sample's image stream and the index where the noisy part starts.

    reference_shapes: latent shapes (C, T, H, W) in prompt order; noisy_shape likewise. A running
    time offset t starts at 0: start token at (t, 0, 0), t += 1; the reference covers t..t+T'-1 with
    h, w from 0; end token at (t, 0, 0), t += 1; the noisy latent continues from there.
    """
    pt, ph, pw = patch
    parts, t = [], 0

    def grid(shape, t0):
        _, frames, height, width = shape
        axes = [torch.arange(n) for n in (frames // pt, height // ph, width // pw)]
        axes[0] = axes[0] + t0
        return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3), frames // pt

    for shape in reference_shapes:
        parts.append(torch.tensor([[t, 0, 0]]))
        ref_grid, ref_frames = grid(shape, t + 1)
        parts.append(ref_grid)
        t += 1 + ref_frames
        parts.append(torch.tensor([[t, 0, 0]]))
        t += 1
    noisy_grid, _ = grid(noisy_shape, t)
    positions = torch.cat(parts + [noisy_grid])
    return positions, positions.shape[0] - noisy_grid.shape[0]


@functools.lru_cache(maxsize=1024)
def sample_layout(reference_shapes: tuple, noisy_shape: tuple, patch: tuple) -> tuple[torch.Tensor, int]:
    """`reference_layout`, kept: a training batch's samples share a few reference shapes. Read-only."""
    return reference_layout(reference_shapes, noisy_shape, patch)


# ---------------------------------------------------------------- the model


class VinoMMDiT(nn.Module):
    def __init__(self, cfg: MMDiTConfig):
        super().__init__()
        self.cfg = cfg
        self.x_embedder = nn.Module()
        self.x_embedder.proj = nn.Conv3d(cfg.in_channels, cfg.hidden, cfg.patch_size, stride=cfg.patch_size)
        self.context_embedder = TokenRefiner(cfg)
        self.time_text_embed = TimeTextEmbed(cfg.hidden, cfg.pooled_dim, cfg.guidance_embeds)
        self.transformer_blocks = nn.ModuleList(DoubleBlock(cfg) for _ in range(cfg.num_double_blocks))
        self.single_transformer_blocks = nn.ModuleList(SingleBlock(cfg) for _ in range(cfg.num_single_blocks))
        self.norm_out = AdaModulation(cfg.hidden, 2)
        self.proj_out = nn.Linear(cfg.hidden, math.prod(cfg.patch_size) * cfg.out_channels)
        self.gradient_checkpointing = False
        self.attention_backend = "auto"
        self.sequence_parallel: SequenceParallel | None = None  # set by the caller under torchrun
        self.layouts: dict[tuple, StreamLayout] = {}

    # -- embedding

    def patchify(self, latent):
        """[B, C, T, H, W] -> [B, T'H'W', D]."""
        return self.x_embedder.proj(latent.to(self.x_embedder.proj.weight.dtype)).flatten(2).transpose(1, 2)

    def unpatchify(self, tokens, shape):
        """[B, T'H'W', C*pt*ph*pw] -> [B, C, T, H, W]."""
        _, c, t, h, w = shape
        pt, ph, pw = self.cfg.patch_size
        x = tokens.reshape(tokens.shape[0], t // pt, h // ph, w // pw, c, pt, ph, pw)
        return x.permute(0, 4, 1, 5, 2, 6, 3, 7).reshape(tokens.shape[0], c, t, h, w)

    def check_latent(self, latent, what):
        _, t, h, w = latent.shape[-4:]
        pt, ph, pw = self.cfg.patch_size
        if latent.shape[-4] != self.cfg.in_channels or t % pt or h % ph or w % pw or min(t, h, w) < 1:
            raise VinoInputError(
                f"{what} latent has shape {tuple(latent.shape)}; expected {self.cfg.in_channels} channels and "
                f"T, H, W divisible by the patch {self.cfg.patch_size}"
            )

    def layout(self, reference_shapes, noisy_shape, device) -> StreamLayout:
        """RoPE tables and masks of a batch whose samples have these reference shapes (cached)."""
        key = (reference_shapes, noisy_shape, str(device))
        if key not in self.layouts:
            positions, starts = zip(*(sample_layout(shapes, noisy_shape, tuple(self.cfg.patch_size))
                                      for shapes in reference_shapes))
            lengths = [p.shape[0] for p in positions]
            longest = max(lengths)
            pos = torch.zeros(len(lengths), longest, 3, dtype=torch.long)
            mask = torch.zeros(len(lengths), longest, dtype=torch.bool)
            for b, p in enumerate(positions):
                pos[b, : lengths[b]] = p
                mask[b, : lengths[b]] = True
            rope = rope_tables(copy_ahead(pos, device), self.cfg.rope_axes, self.cfg.rope_theta)
            padded = None if min(lengths) == longest else copy_ahead(mask, device)
            groups, source = [], None
            if any(reference_shapes):
                noisy_tokens = lengths[0] - starts[0]
                groups, source = stream_sources(reference_shapes, noisy_tokens, lengths, self.cfg.patch_size)
                source = copy_ahead(source, device)
            if len(self.layouts) >= 16:
                self.layouts.pop(next(iter(self.layouts)))
            self.layouts[key] = StreamLayout(rope, padded, lengths, list(starts), groups, source)
        return self.layouts[key]

    def image_stream(self, latents, references, boundary) -> ImageStream:
        """latents: [B, C, T, H, W]; references[b]: list of [C, T_r, H_r, W_r]; boundary[b]: [n_r, 2, D]."""
        batch = latents.shape[0]
        self.check_latent(latents, "noisy")
        references = references if references is not None else [[] for _ in range(batch)]
        layout = self.layout(tuple(tuple(tuple(r.shape) for r in refs) for refs in references),
                             tuple(latents.shape[1:]), latents.device)
        noisy = self.patchify(latents)  # [B, n, D]
        if not any(references):  # the stream is the noisy latent alone: no per-sample assembly
            # contiguous, as the assembled stream is: compiled blocks then need one graph for both
            return ImageStream(noisy.contiguous(), layout.rope, layout.mask, layout.noisy_start, noisy.shape[1])
        bounds = []
        for b, refs in enumerate(references):
            given = boundary[b] if boundary is not None and len(refs) else None
            if len(refs) and (given is None or given.shape[0] != len(refs)):
                got = 0 if given is None else given.shape[0]
                raise VinoInputError(f"sample {b} has {len(refs)} reference latents but {got} boundary token pairs")
            for r, ref in enumerate(refs):
                self.check_latent(ref, f"reference {r + 1} of sample {b}")
            if len(refs):
                bounds.append(given)
        # One table of every token the stream holds, then one gather: a batch costs the same ops at any size
        patched = [self.patchify(torch.stack([references[b][r] for b, r in group])).flatten(0, 1)
                   for group in layout.groups]  # one convolution a reference shape
        table = torch.cat([noisy.new_zeros(1, noisy.shape[-1]), noisy.flatten(0, 1),
                           torch.cat(bounds).to(noisy.dtype).flatten(0, 1), *patched])
        # index_select, not table[source]: its backward adds into rows (each row but the padding row is read once),
        # where indexing's backward sorts the indices first (on the H200, 5.3 ms a call, 8.5 ms of a training
        # step's 187 ms of GPU work in session 17's profile)
        tokens = table.index_select(0, layout.source.flatten()).unflatten(0, layout.source.shape)
        return ImageStream(tokens, layout.rope, layout.mask, layout.noisy_start, noisy.shape[1])

    def conditioning(self, timestep, guidance, pooled):
        embed = self.time_text_embed
        temb = embed.timestep_embedder(timestep_features(timestep))
        if embed.guidance_embedder is not None:
            if guidance is None:
                raise VinoInputError("this MMDiT embeds guidance; pass guidance (VINO uses the constant 1000)")
            temb = temb + embed.guidance_embedder(timestep_features(guidance))
        if pooled is not None:  # the CLIP pooled path of plain HunyuanVideo; VINO leaves it out
            temb = temb + embed.text_embedder(pooled)
        return temb

    # -- forward

    def forward(self, latents, timestep, text, text_mask=None, references=None, boundary=None, guidance=None, pooled=None,
                step_cache: "StepCache | None" = None, text_padded: bool = False):
        """Velocity for the noisy latents.

        latents: [B, C, T, H, W]; timestep, guidance: [B] (t' * 999 and 1000 in VINO);
        text: [B, L, text_dim] with text_mask [B, L] bool (None = all valid);
        references: per sample a list of reference latents [C, T_r, H_r, W_r] in prompt order (or None);
        boundary: per sample [n_refs, 2, hidden] start/end tokens; pooled: [B, pooled_dim] or None;
        step_cache: opt-in first-block cache of one conditioning branch across sampling steps;
        text_padded: the caller knows text_mask holds padding, so it is kept untested (the test of a mask on the
        GPU for all-valid, to drop it, waits for the GPU).
        Returns [B, C, T, H, W].
        """
        batch = latents.shape[0]
        if step_cache is not None and self.sequence_parallel is not None:
            raise VinoInputError("step caching is not available with sequence parallelism")
        if timestep.dim() == 0:
            timestep = timestep.expand(batch)
        if guidance is not None and guidance.dim() == 0:
            guidance = guidance.expand(batch)
        if references is not None and len(references) != batch:
            raise VinoInputError(f"references are given for {len(references)} samples but the batch has {batch}")
        if text_mask is not None and not text_padded and bool(text_mask.all()):
            text_mask = None

        t_features = timestep_features(timestep)
        temb = self.conditioning(timestep, guidance, pooled)
        stream = self.image_stream(latents, references, boundary)
        txt = self.context_embedder(text, t_features, text_mask)
        img, rope = stream.tokens, stream.rope
        key_mask = None
        if stream.mask is not None or text_mask is not None:
            img_mask = stream.mask if stream.mask is not None else torch.ones(img.shape[:2], dtype=torch.bool, device=img.device)
            txt_mask = text_mask if text_mask is not None else torch.ones(txt.shape[:2], dtype=torch.bool, device=img.device)
            key_mask = torch.cat([img_mask, txt_mask], dim=1)
        sp = self.sequence_parallel
        if sp is not None:  # this rank keeps its slice of the image stream
            sp.split(img.shape[1])
            img, rope = sp.shard(img), sp.shard(rope)
        ctx = AttentionContext(rope, key_mask, sp, flash4=self.attention_backend == "flash4")

        n_img = img.shape[1]
        with sdpa_context(self.attention_backend):
            first_in = img
            img, txt = self.run_block(self.transformer_blocks[0], img, txt, temb, ctx)
            reused = step_cache.reuse(img - first_in) if step_cache is not None else None
            if reused is not None:  # the rest of the network would change about as much as last time
                x = img + reused
            else:
                after_first = img
                for block in self.transformer_blocks[1:]:
                    img, txt = self.run_block(block, img, txt, temb, ctx)
                x = torch.cat([img, txt], dim=1)
                for block in self.single_transformer_blocks:
                    x = self.run_block(block, x, n_img, temb, ctx)
                x = x[:, :n_img]
                if step_cache is not None:
                    step_cache.store(x - after_first)
        x = x if sp is None else sp.gather(x)

        starts = stream.noisy_start
        if min(starts) == max(starts):  # one slice for the whole batch
            noisy = x[:, starts[0] : starts[0] + stream.noisy_len]
        else:
            noisy = torch.stack([x[b, s : s + stream.noisy_len] for b, s in enumerate(starts)])
        scale, shift = self.norm_out(temb)
        out = self.proj_out(modulate(noisy, shift, scale))
        return self.unpatchify(out, latents.shape)

    def run_block(self, block, *args):
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)
