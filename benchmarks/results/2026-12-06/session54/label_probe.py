"""Session 54's probe: do the frozen language model's states at each clause of a two-object ti2v caption say which
image the clause is about? A logistic probe on hidden_states[-2] (what both connectors read) of the whole prompt as
VINO reads it (the images, then the caption), at each token of a clause after its label's digit ("object moving
down" of "Image 1 object moving down, ..."), held out by sample (the last 30%).

    python benchmarks/results/2026-12-06/session54/label_probe.py WORLD [SAMPLES]

WORLD: a ti2v world split (python -m training.world --out /tmp/ti2v-train --seed 77 --per-task 1200 --size 128
--tasks ti2v); its first SAMPLES (150) samples of two objects that move unlike each other. Training captions always
name Image 1 first, so each short caption is read in the other order too ("Image 2 object moving left, Image 1
object moving right"): there the digit and the clause's place disagree with the Image-1-first captions'.
"""

import json
import re
import sys

import numpy as np
import torch
from PIL import Image
from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

from vino_model.encoder import process_context

FOLDER = "training/embedded-src/qwen3vl"
CLAUSE_END = re.compile(r"(, | while |Image \d| on a | across a | against a )")


def clause_states(processor, vlm, caption, images):
    """[(digit, clause place (1, 2), state)] for each token after a label's digit up to its clause's end, and the
    states at the images' <|vision_start|> (the boundary tokens' source)."""
    inputs = process_context(processor, caption, images)
    ids = inputs["input_ids"][0]
    positions, _ = vlm.model.get_rope_index(ids[None], inputs["mm_token_type_ids"],
                                            image_grid_thw=inputs.get("image_grid_thw"))
    h = vlm.model(**inputs, position_ids=positions, output_hidden_states=True).hidden_states[-2][0]
    h = h / h.pow(2).mean(-1, keepdim=True).sqrt()
    last = int((ids == vlm.config.vision_end_token_id).nonzero()[-1])
    tail = ids[last + 1:].tolist()
    encoded = processor.tokenizer(caption, return_offsets_mapping=True, add_special_tokens=False)
    n = len(encoded.input_ids)
    at = next((i for i in range(len(tail) - n + 1) if tail[i:i + n] == encoded.input_ids), None)
    if at is None:
        return [], []
    found = []
    for place, match in enumerate(re.finditer(r"Image (\d)", caption), 1):
        after = CLAUSE_END.search(caption[match.end():])
        end = match.end() + after.start() if after else len(caption)
        for i, (s, e) in enumerate(encoded.offset_mapping):
            if s >= match.end() and e <= end and e > s:
                found.append((int(match.group(1)), place, h[last + 1 + at + i]))
    starts = (ids == vlm.config.vision_start_token_id).nonzero()[:, 0].tolist()
    return found, [h[s] for s in starts]


def probe(x_train, y_train, x_test, y_test, steps=300, decay=1e-3):
    """Held-out accuracy of a two-class logistic probe (labels 1 and 2), trained by L-BFGS."""
    x_train, x_test = torch.stack(x_train), torch.stack(x_test)
    y_train, y_test = torch.tensor(y_train) - 1, torch.tensor(y_test) - 1
    w = torch.zeros(x_train.shape[1], 2, requires_grad=True)
    b = torch.zeros(2, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], max_iter=steps)

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x_train @ w + b, y_train) + decay * w.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return float(((x_test @ w + b).argmax(1) == y_test).float().mean())


@torch.no_grad()
def main(world, count=150):
    processor = AutoProcessor.from_pretrained(FOLDER)
    vlm = Qwen3VLForConditionalGeneration.from_pretrained(FOLDER, dtype=torch.float32).eval()
    rows = [json.loads(line) for line in open(f"{world}/manifest.jsonl")]
    rows = [r for r in rows if r["task"] == "ti2v" and len(r["meta"]["scene"]["objects"]) == 2
            and r["meta"]["scene"]["objects"][0]["motion"] != r["meta"]["scene"]["objects"][1]["motion"]][:count]
    split = int(0.7 * len(rows))
    tokens = {}  # variant -> (train, test) lists of (digit, place, state)
    boundary = ([], [])  # (train, test) lists of (image number, state)
    for n, row in enumerate(rows):
        images = [Image.open(f"{world}/{p}").convert("RGB") for p in row["ref_images"]]
        short = row["caption_short"].split(", ")
        variants = {"long": row["caption_long"], "short": row["caption_short"]}
        if len(short) == 2:
            variants["short, Image 2 first"] = ", ".join(short[::-1])
        for name, caption in variants.items():
            found, starts = clause_states(processor, vlm, caption, images)
            tokens.setdefault(name, ([], []))[n >= split].extend(found)
            if name == "long":
                boundary[n >= split].extend((k, s) for k, s in enumerate(starts, 1))
    print(f"{len(rows)} two-object ti2v samples of {world}, {split} to train each probe; held-out accuracy:")

    def report(label, train, test, key):
        accuracy = probe([t[2] for t in train], [key(t) for t in train], [t[2] for t in test], [key(t) for t in test])
        print(f"  {label}: {accuracy:.3f} ({len(train)} / {len(test)} tokens)")

    for name in ("long", "short"):
        report(f"the digit at the clause's tokens, {name} captions (Image 1 first)", *tokens[name], lambda t: t[0])
    both = [a + b for a, b in zip(tokens["short"], tokens["short, Image 2 first"])]
    report("the digit, short captions in both orders", *both, lambda t: t[0])
    report("the clause's place, short captions in both orders", *both, lambda t: t[1])
    report("the image number at each image's <|vision_start|>", [(k, 0, s) for k, s in boundary[0]],
           [(k, 0, s) for k, s in boundary[1]], lambda t: t[0])


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:3]))
