"""Speed and memory of VINO's MMDiT and VAE at the release's default video size, on one GPU.

    python benchmarks/speed.py --phase forward,loop,compile,fp8,swap,vae --out results.json
    python benchmarks/speed.py --phase forward,flash4,compile,loop --attention cudnn,flash4   # with flash-attn-4

Every number is measured side by side in the same run with the same random bf16 weights of the real
13B config (ours is assigned diffusers' tensors, so they are held once), and ratios are printed
against diffusers' HunyuanVideoTransformer3DModel on the identical text-to-video forward.
Effective TFLOP/s use the anchor formula: 2 x linear params x tokens + 4 x tokens^2 x 3072 x 60.
Shapes (../shared/spec/anchors.md): output 480x848, 85 frames (latent 22x60x106, 34,980 tokens),
one reference image (1,590 tokens + 2 boundary tokens), 900 VLM tokens.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vino_model.config import preset  # noqa: E402
from vino_model.mmdit import VinoMMDiT  # noqa: E402
from vino_model.sampler import Branch, sample  # noqa: E402
from vino_model.speedups import FP8Linear  # noqa: E402

DEV, DT = torch.device("cuda"), torch.bfloat16
NOISY_TOKENS = 22 * 30 * 53
GIB = 2**30


def linear_params(model) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def attention_flops(tokens: int) -> float:
    """One block's attention at the anchor formula's width (24 heads x 128)."""
    return 4 * tokens**2 * 3072


def tflops(params: int, tokens: int, seconds: float) -> float:
    return (2 * params * tokens + 60 * attention_flops(tokens)) / seconds / 1e12


def timed(fn, repeats: int = 3, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return sorted(times)[len(times) // 2]


class Bench:
    def __init__(self, with_model: bool, with_diffusers: bool, attention: list[str]):
        self.rows: list[dict] = []
        self.attention = attention  # the kernels the compile phase times; the last serves loop, fp8 and swap
        if with_model:
            self.build(with_diffusers)

    def build(self, with_diffusers: bool):
        cfg = preset("hunyuanvideo-13b").mmdit
        with torch.device("meta"):
            self.ours = VinoMMDiT(cfg)
        if with_diffusers:
            from diffusers import HunyuanVideoTransformer3DModel

            with torch.device("meta"):
                theirs = HunyuanVideoTransformer3DModel()
            self.theirs = theirs.to_empty(device=DEV).to(DT).eval()
            state = self.theirs.state_dict()
        else:
            self.theirs = None
            state = {k: torch.empty(v.shape, device=DEV, dtype=DT) for k, v in self.ours.state_dict().items()}
        with torch.no_grad():
            for value in state.values():
                value.normal_(0, 0.02)
        self.ours.load_state_dict(state, strict=True, assign=True)
        self.ours.eval().requires_grad_(False)
        self.params = linear_params(self.ours)
        g = torch.Generator(device=DEV).manual_seed(0)
        rand = lambda *shape: torch.randn(*shape, device=DEV, dtype=DT, generator=g)  # noqa: E731
        self.x = rand(1, 16, 22, 60, 106)
        self.t = torch.tensor([500.0], device=DEV)
        self.guidance = torch.tensor([1000.0], device=DEV)
        self.text256, self.text900, self.text200 = rand(1, 256, 4096), rand(1, 900, 4096), rand(1, 200, 4096)
        self.ref, self.boundary = rand(16, 1, 60, 106), rand(1, 2, 3072)

    def t2v(self):
        return self.ours(self.x, self.t, self.text256, guidance=self.guidance)

    def one_ref(self):
        return self.ours(self.x, self.t, self.text900, references=[[self.ref]], boundary=[self.boundary],
                         guidance=self.guidance)

    def record(self, name, seconds, tokens=None, **extra):
        torch.cuda.synchronize()
        row = {"name": name, "seconds": round(seconds, 4), "peak_gib": round(torch.cuda.max_memory_allocated() / GIB, 2)}
        if tokens and hasattr(self, "params"):
            row["tflops"] = round(tflops(self.params, tokens, seconds), 1)
        row.update(extra)
        self.rows.append(row)
        print(f"{name:58s} {seconds:8.3f} s  {row.get('tflops', ''):>6} TFLOP/s  peak {row['peak_gib']:.1f} GiB "
              + " ".join(f"{k}={v}" for k, v in extra.items()), flush=True)
        torch.cuda.reset_peak_memory_stats()


def relative_error(a, b) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@torch.inference_mode()
def phase_forward(b: Bench):
    mask = torch.ones(1, 256, dtype=torch.bool, device=DEV)
    pooled = torch.zeros(1, 768, device=DEV, dtype=DT)
    theirs = lambda: b.theirs(b.x, b.t, b.text256, mask, pooled, b.guidance, return_dict=False)[0]  # noqa: E731
    b.record("diffusers t2v (256 text tokens)", timed(theirs), NOISY_TOKENS + 256)
    error = relative_error(b.ours(b.x, b.t, b.text256, guidance=b.guidance, pooled=pooled), theirs())
    for backend in ("cudnn", "flash", "auto"):
        b.ours.attention_backend = backend
        b.record(f"ours t2v, attention={backend}", timed(b.t2v), NOISY_TOKENS + 256,
                 rel_error_vs_diffusers=f"{error:.1e}")
    b.ours.attention_backend = "cudnn"
    b.record("ours 1 reference + 900 text tokens, cudnn", timed(b.one_ref), NOISY_TOKENS + 1592 + 900)


@torch.inference_mode()
def phase_loop(b: Bench, steps: int):
    """Sampling loops: per-step cost against the forwards it must run (the waste between steps)."""
    b.ours.attention_backend = b.attention[-1]
    refs = [b.ref]
    branches = {"cond": Branch(b.text900[0], refs, b.boundary), "uncond": Branch(b.text200[0], refs, b.boundary),
                "uncond_img": Branch(b.text200[0], [], None)}
    noise = b.x.float()
    forward = timed(b.one_ref)
    for name, text_cfg, image_cfg, forwards in (("text CFG", 7.0, 1.0, 2), ("text + image CFG", 7.0, 2.0, 3)):
        seconds = timed(lambda: sample(b.ours, noise, branches, steps, 7.0, text_cfg, image_cfg), repeats=1)
        per_step = seconds / steps
        b.record(f"sampling loop, {name}, per step ({steps} steps)", per_step,
                 forwards_per_step=forwards, est_50_steps_s=round(per_step * 50, 1),
                 one_ref_forward_s=round(forward, 3), attention=b.ours.attention_backend)


@torch.inference_mode()
def phase_compile(b: Bench):
    """torch.compile of the blocks, with each attention kernel of --attention (exact math throughout)."""
    from vino_model.speedups import compile_blocks

    b.ours.attention_backend = "cudnn"
    eager_t2v, eager_ref = b.t2v(), b.one_ref()
    compile_blocks(b.ours)
    for backend in b.attention:
        b.ours.attention_backend = backend
        started = time.perf_counter()
        b.t2v()
        torch.cuda.synchronize()
        compile_s = time.perf_counter() - started
        b.record(f"ours t2v, torch.compile blocks, {backend}", timed(b.t2v), NOISY_TOKENS + 256,
                 compile_s=round(compile_s, 1), rel_error_vs_eager_cudnn=f"{relative_error(b.t2v(), eager_t2v):.1e}")
        b.record(f"ours 1 reference, torch.compile blocks, {backend}", timed(b.one_ref), NOISY_TOKENS + 1592 + 900,
                 rel_error_vs_eager_cudnn=f"{relative_error(b.one_ref(), eager_ref):.1e}")


@torch.inference_mode()
def phase_flash4(b: Bench):
    """FlashAttention-4 against cuDNN: the attention kernel alone, then the eager forwards."""
    from vino_model.flash4 import require
    from vino_model.mmdit import attention, sdpa_context

    require(DEV)
    g = torch.Generator(device=DEV).manual_seed(1)
    for tokens in (NOISY_TOKENS + 256, NOISY_TOKENS + 1592 + 900):
        q, k, v = (torch.randn(1, tokens, 24, 128, device=DEV, dtype=DT, generator=g) for _ in range(3))
        with sdpa_context("cudnn"):
            reference = attention(q, k, v)
            cudnn_s = timed(lambda: attention(q, k, v), repeats=10)
        flash4_s = timed(lambda: attention(q, k, v, flash4=True), repeats=10)
        error = relative_error(attention(q, k, v, flash4=True), reference)
        for name, seconds in (("cudnn", cudnn_s), ("flash4", flash4_s)):
            b.record(f"attention alone, {tokens} tokens, {name}", seconds,
                     attention_tflops=round(attention_flops(tokens) / seconds / 1e12, 1),
                     **({"rel_error_vs_cudnn": f"{error:.1e}"} if name == "flash4" else {}))
    b.ours.attention_backend = "cudnn"
    eager_t2v, eager_ref = b.t2v(), b.one_ref()
    b.ours.attention_backend = "flash4"
    b.record("ours t2v, attention=flash4", timed(b.t2v), NOISY_TOKENS + 256,
             rel_error_vs_cudnn=f"{relative_error(b.t2v(), eager_t2v):.1e}")
    b.record("ours 1 reference + 900 text tokens, flash4", timed(b.one_ref), NOISY_TOKENS + 1592 + 900,
             rel_error_vs_cudnn=f"{relative_error(b.one_ref(), eager_ref):.1e}")


@torch.inference_mode()
def phase_profile(b: Bench):
    """Where the one-reference forward's GPU time goes (after the phases before it: compiled or not)."""
    from torch.profiler import ProfilerActivity, profile

    b.one_ref()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        b.one_ref()
        torch.cuda.synchronize()
    kernels = sorted(((e.key, e.device_time_total / 1e6, e.count) for e in prof.key_averages()
                      if e.device_time_total > 0), key=lambda k: -k[1])
    total = sum(seconds for _, seconds, _ in kernels)
    groups: dict[str, float] = {}
    for name, seconds, _ in kernels:
        lower = name.lower()
        group = ("attention" if any(w in lower for w in ("fmha", "flash", "attention", "cudnn")) else
                 "matmul" if any(w in lower for w in ("gemm", "nvjet", "cutlass", "sm90_xmma")) else
                 "triton (fused element-wise)" if "triton" in lower else "other")
        groups[group] = groups.get(group, 0.0) + seconds
    b.record(f"profile of the 1-reference forward, attention={b.ours.attention_backend}", total,
             groups={k: round(v, 4) for k, v in sorted(groups.items(), key=lambda g: -g[1])},
             top=[(name[:90], round(seconds, 4), count) for name, seconds, count in kernels[:15]])


@torch.inference_mode()
def phase_fp8(b: Bench):
    from vino_model.speedups import compile_blocks, fp8_linears

    b.ours.attention_backend = b.attention[-1]
    exact_t2v, exact_ref = b.t2v(), b.one_ref()
    count = fp8_linears(b.ours)
    b.record(f"ours t2v, FP8 linears, {b.ours.attention_backend}", timed(b.t2v), NOISY_TOKENS + 256, layers=count,
             rel_error_vs_bf16=f"{relative_error(b.t2v(), exact_t2v):.1e}")
    compile_blocks(b.ours)
    b.t2v()
    b.record(f"ours t2v, FP8 linears + compile, {b.ours.attention_backend}", timed(b.t2v), NOISY_TOKENS + 256,
             rel_error_vs_bf16=f"{relative_error(b.t2v(), exact_t2v):.1e}")
    b.record(f"ours 1 reference, FP8 linears + compile, {b.ours.attention_backend}", timed(b.one_ref),
             NOISY_TOKENS + 1592 + 900,
             rel_error_vs_bf16=f"{relative_error(b.one_ref(), exact_ref):.1e}")


@torch.inference_mode()
def phase_swap(b: Bench, cap_gib: float):
    from vino_model.offload import BlockSwap

    if any(isinstance(m, FP8Linear) for m in b.ours.modules()):
        raise SystemExit("run the swap phase apart from the fp8 phase, which has replaced the bf16 layers")
    b.ours.attention_backend = b.attention[-1]
    full = timed(b.one_ref)
    exact = b.one_ref()
    swap = BlockSwap(b.ours, DEV, int(cap_gib * GIB))
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(cap_gib * GIB / torch.cuda.get_device_properties(0).total_memory)
    torch.cuda.reset_peak_memory_stats()
    seconds = timed(b.one_ref)
    b.record(f"ours 1 reference, block swap under a {cap_gib:g} GiB cap, {b.ours.attention_backend}", seconds,
             NOISY_TOKENS + 1592 + 900,
             resident_blocks=60 - len(swap.swapped), slowdown=round(seconds / full, 2),
             rel_error_vs_resident=f"{relative_error(b.one_ref(), exact):.1e}")


@torch.inference_mode()
def phase_vae(b: Bench, cap_gib: float):
    from diffusers import AutoencoderKLHunyuanVideo

    from vino_model.vae import VinoVAE

    with torch.device("meta"):
        model = AutoencoderKLHunyuanVideo()
    model = model.to_empty(device=DEV).to(torch.float16).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    vae = VinoVAE(model)
    torch.cuda.set_per_process_memory_fraction(cap_gib * GIB / torch.cuda.get_device_properties(0).total_memory)
    latents = torch.randn(1, 16, 22, 60, 106, device=DEV, dtype=torch.float16)
    torch.cuda.reset_peak_memory_stats()
    b.record(f"VAE decode 480x848x85, tiled, under a {cap_gib:g} GiB cap",
             timed(lambda: vae.decode(latents, tiled=True), repeats=1))
    pixels = torch.randn(1, 3, 85, 480, 848, device=DEV, dtype=torch.float16).clamp(-1, 1)
    b.record(f"VAE encode 480x848x85, tiled, under a {cap_gib:g} GiB cap",
             timed(lambda: vae.encode(pixels, sample=False, tiled=True), repeats=1))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--phase", default="forward,loop", help="forward, loop, compile, flash4, profile, fp8, swap, vae")
    p.add_argument("--out", default="speed.json")
    p.add_argument("--steps", type=int, default=5, help="sampling-loop steps timed (per-step cost is reported)")
    p.add_argument("--cap", type=float, default=24.0, help="GiB cap for the swap and vae phases")
    p.add_argument("--attention", default="cudnn", help="kernels the compile phase times, and the last for the loops")
    args = p.parse_args()
    phases = args.phase.split(",")
    b = Bench(with_model=phases != ["vae"], with_diffusers="forward" in phases, attention=args.attention.split(","))
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    for phase in phases:
        if phase == "forward":
            phase_forward(b)
        elif phase == "loop":
            phase_loop(b, args.steps)
        elif phase == "compile":
            phase_compile(b)
        elif phase == "profile":
            phase_profile(b)
        elif phase == "flash4":
            phase_flash4(b)
        elif phase == "fp8":
            phase_fp8(b)
        elif phase == "swap":
            phase_swap(b, args.cap)
        elif phase == "vae":
            phase_vae(b, args.cap)
        else:
            raise SystemExit(f"unknown phase {phase}")
    base = next((r["seconds"] for r in b.rows if r["name"].startswith("diffusers t2v")), None)
    if base:
        print("\nratio vs diffusers t2v (same run):")
        for row in b.rows:
            if "tflops" in row:
                row["speedup_vs_diffusers_t2v"] = round(base / row["seconds"], 3)
                print(f"  {row['name']:58s} {row['speedup_vs_diffusers_t2v']:.2f}x")
    Path(args.out).write_text(json.dumps({"device": torch.cuda.get_device_name(), "date": time.strftime("%Y-%m-%d"),
                                          "torch": torch.__version__, "phases": phases, "rows": b.rows}, indent=1))


if __name__ == "__main__":
    main()
