"""How much of a stage-0 model survives the VLM path, with the connector's error taken out of the question.

A stage-0 export learned its captions from the native text encoder: the caption's tokens alone. The VLM path gives
the MMDiT the whole sequence instead (system prompt, chat template, caption, learnable queries). This trains the
text connector alone to the native states on the caption's tokens (no MMDiT: `model.native_align`'s term and
nothing else), then samples the held-out t2i prompts with the stage-0 MMDiT reading (a) the whole sequence, as a
bundle does, and (b) only the caption's tokens, and scores both (training.bench). The native encoder's own score
is `benchmarks/embedded_probe.py --t0 1.0`.

    python benchmarks/embedded_vlm_read.py --init training/embedded-src/stage0 \
        --captions data/embedded/base/manifest.jsonl --data data/embedded/heldout --steps 500
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training import bench, model  # noqa: E402
from training.config import load as load_config  # noqa: E402
from training.data import Context  # noqa: E402
from training.model import find_last  # noqa: E402
from vino_model.preprocess import tensor_to_frames  # noqa: E402
from vino_model.sampler import Branch, sample  # noqa: E402
from vino_model.tasks import read_task_file  # noqa: E402
from vino_model.vae import VinoVAE  # noqa: E402


def alignment_error(trainee, captions: list[str]) -> torch.Tensor:
    """Per caption: the connector's distance to the native states on the caption's tokens, over their mean square."""
    contexts = [Context(text, [], None, None) for text in captions]
    encoded = trainee.encoder.encode_batch([(text, [], None, None) for text in captions])
    return trainee.alignment(contexts, encoded.input_ids, encoded.text_states)


def train_connector(trainee, captions: list[str], steps: int, batch: int, lr: float, seed: int) -> None:
    """AdamW on the text connector alone, 50 warm-up steps, then a cosine to 0."""
    params = list(trainee.encoder.mm_encoder.connector.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    rng = random.Random(seed)
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * step / steps))
        loss = alignment_error(trainee, rng.sample(captions, batch)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@torch.no_grad()
def text_states(trainee, caption: str, caption_only: bool) -> torch.Tensor:
    """The MMDiT's text tokens [L, text_dim]: the whole sequence, or the caption's tokens alone."""
    encoded = trainee.encoder.encode_batch([(caption, [], None, None)])
    states = encoded.text_states[0][encoded.mask[0]]
    if not caption_only:
        return states
    ids = trainee.teacher.caption_ids(caption)
    start = find_last(encoded.input_ids[0].tolist(), ids) if ids else None
    return states[:0] if start is None else states[start: start + len(ids)]


@torch.no_grad()
def sample_image(trainee, vae, caption: str, caption_only: bool, side: int, seed: int, steps: int, shift: float,
                 cfg: float) -> torch.Tensor:
    """One side x side image from noise, text CFG against the empty prompt read the same way; uint8 [H, W, 3]."""
    branches = {name: Branch(text_states(trainee, text, caption_only)) for name, text in
                {"cond": caption, "uncond": ""}.items()}
    latent = side // vae.spatial_compression
    shape = (1, trainee.transformer.cfg.in_channels, 1, latent, latent)  # [B, C, T, H, W]
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    return tensor_to_frames(vae.decode(sample(trainee.transformer, noise, branches, steps, shift, cfg, 1.0)))[0]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--init", required=True, help="a stage-0 export (a file or a sharded folder)")
    p.add_argument("--config", default="training/configs/embedded/stage1.toml", help="a stage-1 config (native_align)")
    p.add_argument("--vae", default="models/embedded-src/vae-decoder.safetensors")
    p.add_argument("--captions", required=True,
                   help="a world manifest whose long and short captions train the connector")
    p.add_argument("--data", required=True, help="a held-out world split with t2i entries")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--sample-steps", type=int, default=30)
    p.add_argument("--shift", type=float, default=3.0)
    p.add_argument("--cfg", type=float, default=4.0)
    p.add_argument("--out", default="output/embedded-vlm-read")
    args = p.parse_args(argv)

    cfg = load_config(args.config, [f"model.init={args.init}", "optim.bf16=false"])
    trainee, _ = model.build(cfg)
    records = [json.loads(line) for line in Path(args.captions).read_text().splitlines() if line.strip()]
    captions = [r[key] for r in records for key in ("caption_long", "caption_short")]
    data = Path(args.data)
    entries = [e for e in read_task_file(data / "tasks_image.json") if e.task == "t2i"]
    side = json.loads((data / "manifest.jsonl").read_text().splitlines()[0])["width"]
    train_connector(trainee.train(), captions, args.steps, args.batch, args.lr, cfg.run.seed)
    trainee.eval()
    with torch.no_grad():
        error = alignment_error(trainee, [e.caption for e in entries]).mean()
    print(f"connector after {args.steps} steps: {float(error):.4f} relative error on the held-out captions")

    vae = VinoVAE.load(args.vae)
    for read, caption_only in (("whole-sequence", False), ("caption-only", True)):
        print(f"the MMDiT reads the {read.replace('-', ' ')}")
        print(bench.t2i_table(data, Path(args.out) / read, lambda e: sample_image(
            trainee, vae, e.caption, caption_only, side, int(e.index), args.sample_steps, args.shift, args.cfg)))


if __name__ == "__main__":
    main()
