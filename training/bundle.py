"""Assemble a trained VINO into a bundle folder, the layout Load VINO (embedded default) and
`python -m vino_model.generate --model` read:

    vino.safetensors   transformer.* and mm_encoder.* (config in the metadata)
    qwen3vl/           the Qwen3-VL folder (config, weights, tokenizer, processors)
    vae.safetensors    the VAE with its config and scaling factor
    defaults.json      the sampling defaults the model was trained for (size, frames, steps, guidance)
    demo/              one held-out world sample per task kind: task files, references, ground truth

Weights are stored in float16 (the readers cast to the dtype they run in); with --int8 the MMDiT's and the
connectors' matrices as int8 rows (vino_model.checkpoint.quantize_rows), half their bytes. The folder is built
beside the target and swapped in only when complete.

    python -m training.bundle --checkpoint runs/embedded/stage3/export/vino-ema.safetensors \
        --qwen models/embedded-src/qwen3vl --vae models/embedded-src/vae.safetensors --out vino_model/embedded
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from vino_model.checkpoint import join_vino_state, load_vino_weights, quantize_rows, save_vino
from vino_model.errors import VinoInputError, run_cli
from vino_model.files import atomic_output
from vino_model.vae import VinoVAE

from .world import VIDEO_FORMATS, write_split

# 128x128 and 17 frames: what the world renders; guidance chosen on the training split (scripts/bench_embedded.sh).
# image_cfg_tasks: the tasks that score higher with image CFG 3. The session-19 model: ti2i_ref 0.271 -> 0.417 on
# 48 held-out prompts (H200; 8 wins, 1 loss; the same at 4 and 6), i2v 0.565 -> 0.614 on 24 (CPU; 8 wins, 1 loss);
# ti2i, ti2v and tiv2v gained nothing (benchmarks/results/2026-12-02/image-cfg.md). The session-40 model: ti2v
# 0.408 -> 0.483 on 24 tuning prompts (5 wins, no loss), and on the 24 held-out ones 6 wins and 2 losses (the losses
# drawn a size too large by a decoder since retuned); clone 0.306 -> 0.397 on 24 tuning prompts (6 / 1) but 0.257 ->
# 0.128 on 12 held-out ones (0 / 2, direction and speed lost), so clone kept 1
# (benchmarks/results/2026-12-04/embedded-session41.md). The committed seed (session 52, scripts/sampler_sweep.sh on
# 24 tuning prompts a task): clone 0.485 -> 0.647 (11 / 3) and tiv2v 0.803 -> 0.910 (14 / 2) at 3; then on the
# held-out sets clone 0.325 -> 0.444 (3 / 0) and tiv2v 0.894 -> 0.910 (2 / 0). 5 did no better than 3, nor did 50
# steps, shift 5 or text CFG 3 or 6 (benchmarks/results/2026-12-06/embedded-session52.md). Videos take 20 steps, in
# 0.63-0.65 of the CPU time of 30: the committed seed's held-out videos scored 74 of 80 prompts as at 30 (1 better /
# 5 worse, p 0.22; the two real losses were failing at 30 already: t2v 0.863 -> 0.829, ti2v 0.724 -> 0.699 on 24
# prompts each; benchmarks/results/2026-12-07/embedded-session65.md).
DEFAULTS = {"width": 128, "height": 128, "frames": 17, "steps": 30, "steps_video": 20, "cfg": 4.0, "image_cfg": 1.0,
            "image_cfg_tasks": {"clone": 3.0, "i2v": 3.0, "ti2i_ref": 3.0, "ti2v": 3.0, "tiv2v": 3.0}, "shift": 3.0,
            "negative_image": "", "negative_video": ""}
DEMO_SEED = 7  # held-out prompts, apart from the benchmark's (seed 0)


def _half(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.to(torch.float16).contiguous() if v.is_floating_point() else v.contiguous() for k, v in state.items()}


def write_bundle(checkpoint: Path, qwen: Path, vae: Path, out: Path, defaults: dict, video_format: str = "mp4",
                 int8: bool = False) -> Path:
    config, transformer, mm_encoder = load_vino_weights(checkpoint)
    if mm_encoder is None:
        raise VinoInputError(f"--checkpoint {checkpoint} has no mm_encoder.* weights; expected a stage 1-3 export")
    if not (qwen / "config.json").is_file():
        raise VinoInputError(f"--qwen {qwen} is not a Qwen3-VL folder (no config.json)")
    state = join_vino_state(transformer, mm_encoder)
    with atomic_output(out, replace_folder=True) as partial:  # an earlier bundle there is replaced as a whole
        partial.mkdir()
        state = _half(state)
        save_vino(partial / "vino.safetensors", quantize_rows(state) if int8 else state, config)
        shutil.copytree(qwen, partial / "qwen3vl", ignore=shutil.ignore_patterns("*.safetensors", "*.partial*"))
        for weights in qwen.glob("*.safetensors"):
            save_file(_half(load_file(weights)), str(partial / "qwen3vl" / weights.name), metadata={"format": "pt"})
        model = VinoVAE.load(vae)
        model.model.to(torch.float16)
        model.save(partial / "vae.safetensors")
        (partial / "defaults.json").write_text(json.dumps(defaults, indent=1) + "\n")
        # --demo's and the workflow twins' inputs
        write_split(partial / "demo", seed=DEMO_SEED, per_task=1, width=defaults["width"], height=defaults["height"],
                    frames=defaults["frames"], split="heldout", video_format=video_format)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m training.bundle", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", type=Path, required=True, help="a stage 1-3 export (vino.safetensors)")
    p.add_argument("--qwen", type=Path, required=True, help="the Qwen3-VL folder it was trained with")
    p.add_argument("--vae", type=Path, required=True, help="the VAE it was trained with")
    p.add_argument("--out", type=Path, required=True, help="bundle folder (replaced when complete)")
    p.add_argument("--defaults", type=json.loads, default={}, help="JSON object: sampling defaults over DEFAULTS")
    p.add_argument("--video-format", choices=list(VIDEO_FORMATS), default="mp4",
                   help="the demo's videos (npz needs no PyAV; the shipped bundle's demo is mp4)")
    p.add_argument("--int8", action="store_true", help="the MMDiT's and connectors' matrices as int8 rows")
    args = p.parse_args(argv)
    return run_cli(lambda: print(write_bundle(args.checkpoint, args.qwen, args.vae, args.out,
                                              {**DEFAULTS, **args.defaults}, args.video_format, args.int8)))


if __name__ == "__main__":
    sys.exit(main())
