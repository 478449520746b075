"""How far a new language model moves the states an MMDiT trained on the old one reads.

VINO freezes its VLM, and the MMDiT learns the states at hidden_states[-2]. When the embedded default's tiny
language model goes on training (`python -m training.language --init OLD`, a binding run), the next stage-3 run
starts from an MMDiT fitted to OLD's states. This reads held-out t2i captions as VINO's prompt renders them (the
chat template, text only) with both models and prints the mean square of the change over the mean square of OLD's
states at that layer: session 29's colour binding run moved them 10.3%, and stage 3 went on from there.

    python benchmarks/embedded_lm_shift.py OLD NEW [--captions data/embedded/heldout/manifest.jsonl --count 120]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.manifest import read_manifest  # noqa: E402
from vino_model.encoder import render_prompt  # noqa: E402


@torch.no_grad()
def read_states(folder: Path, captions: list[str], layer: int) -> list[torch.Tensor]:
    """hidden_states[layer] of each caption's prompt [L, hidden] under the language model in `folder`."""
    processor = AutoProcessor.from_pretrained(folder)
    vlm = Qwen3VLForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
    states = []
    for caption in captions:
        ids = torch.tensor([processor.tokenizer(render_prompt(processor, caption, 0, False))["input_ids"]])
        states.append(vlm.model.language_model(input_ids=ids, output_hidden_states=True).hidden_states[layer][0])
    return states


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("old", type=Path, help="the tiny Qwen3-VL folder the MMDiT was trained on")
    p.add_argument("new", type=Path, help="the one that replaces it")
    p.add_argument("--captions", type=Path, default=Path("data/embedded/heldout/manifest.jsonl"),
                   help="a world manifest whose t2i long captions are read")
    p.add_argument("--count", type=int, default=120, help="captions read")
    p.add_argument("--layer", type=int, default=-2, help="the layer VINO reads")
    args = p.parse_args(argv)
    captions = [r.caption_long for r in read_manifest(args.captions) if r.task == "t2i"][:args.count]
    if not captions:
        raise SystemExit(f"--captions {args.captions}: expected a manifest with t2i records")
    old, new = (read_states(folder, captions, args.layer) for folder in (args.old, args.new))
    change = sum(float((a - b).pow(2).sum()) for a, b in zip(old, new)) / sum(float(a.pow(2).sum()) for a in old)
    print(f"hidden_states[{args.layer}] over {len(captions)} t2i prompts of {args.captions}: mean square of the change "
          f"over the mean square {change:.4f}")


if __name__ == "__main__":
    main()
