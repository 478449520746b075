"""Teach a tiny Qwen3-VL the procedural world's language before VINO freezes it.

No pre-trained small VLM exists here, and a random frozen language model turns captions into poor
features. This writes a tiny Qwen3-VL folder (real transformers classes, a byte-level BPE tokenizer
trained on the world's captions) and trains its language model on those captions, read as the VLM
reads them at generation time (a user turn of the chat template), with next-token prediction. Each
caption is followed by an assistant reply that lists its scene's objects, shape first, so the states keep
every attribute the caption names (`--captions-only` leaves the reply out). An identity term
(`--identity`) asks each token's state at the layers VINO reads (hidden_states[-3] and [-2]) to point
at its own token embedding, so a word stays readable there: next-token prediction alone lets a word the
continuation does not need (the shape, in "a red circle in the center") fade to a faint trace after the
first layer. A binding term (`--binding`) asks the same states to say, at each token of an object's
phrase from its shape word on ("star in the bottom left corner"), that object's colour and shape (and its
size, with `--bind color,shape,size`), through linear heads thrown away after training: the MMDiT's text tokens
carry no positions, so only the states can tell it which colour goes with which shape and place. The vision
tower stays as initialised. Captions come from `training.world.sample` in the train split, so no held-out
colour x shape pair is ever seen.

    python -m training.language --out models/embedded-src/qwen3vl --steps 1500 [--hidden 128 --layers 4]
    python -m training.language --out NEW --init OLD --steps 100 --lr 1e-3   # go on from a trained one

The folder appears only when training has finished (written beside it, then renamed).
"""

from __future__ import annotations

import argparse
import itertools
import logging
import math
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

from vino_model.encoder import right_pad
from vino_model.errors import VinoInputError, run_cli
from vino_model.files import atomic_output
from vino_model.tiny_qwen import make_tiny_qwen3vl

from .manifest import TASKS
from .model import NativeTextEncoder
from .world import COLORS, PLURALS, SHAPES, SIZE_WORDS, SIZES, TEXTURES, sample

log = logging.getLogger("vino.train")


def world_captions(count: int, seed: int) -> list[tuple[str, str]]:
    """`count` (caption, objects) pairs of train-split samples, long and short captions of every task kind in
    turn. `objects` lists the output scene's objects, shape first ("circle red large striped; ..."): the
    reply the language model learns to give, so that every attribute the caption names must stay readable in
    its states (next-token prediction alone keeps only what predicts the caption's next words)."""
    pairs = []
    for index in range(math.ceil(count / (2 * len(TASKS)))):
        for task in TASKS:
            meta, long, short = sample(task, seed, index, frames=5)
            objects = "; ".join(f"{o['shape']} {o['color']} {o['size']} {o['texture']}"
                                for o in meta["scene"]["objects"])
            pairs += [(long, objects), (short, objects)]
    return pairs[:count]


USER_TURN = "<|im_start|>user\n"


def chat_ids(tokenizer, caption: str, reply: str = "") -> list[int]:
    """The caption as the VLM's user turn, as `vino_model.encoder` renders it (without the system turn),
    followed by the assistant's reply when there is one."""
    return chat_tokens(tokenizer, caption, reply)[0]


BOUND = {"color": list(COLORS), "shape": list(SHAPES), "size": list(SIZES)}  # the binding labels' columns, in order


def chat_tokens(tokenizer, caption: str, reply: str = "") -> tuple[list[int], torch.Tensor]:
    """`chat_ids`, and the binding labels of its tokens [L, 3]: the colour, shape and size (indices into BOUND's
    lists; -100 for a size the caption does not name) of the object whose phrase each token belongs to
    (`mentions`), -100 elsewhere."""
    ended = f"{reply}<|im_end|>\n" if reply else ""
    encoded = tokenizer(f"{USER_TURN}{caption}<|im_end|>\n<|im_start|>assistant\n{ended}", return_offsets_mapping=True)
    labels = torch.full((len(encoded.input_ids), len(BOUND)), -100)
    spans = torch.tensor(encoded.offset_mapping).reshape(-1, 2) - len(USER_TURN)
    for start, end, *named in mentions(caption):
        inside = (spans[:, 0] < end) & (spans[:, 1] > start)
        labels[inside] = torch.tensor([-100 if value is None else values.index(value)
                                       for value, values in zip(named, BOUND.values())])
    return encoded.input_ids, labels


SHAPE_WORDS = {**{s: s for s in SHAPES}, **{plural: s for s, plural in PLURALS.items()}}
JOINS = {"and", "while", "with", "into", ","}
MODIFIERS = {"a", "an", "the", "two", "three", *SIZE_WORDS.values(), *TEXTURES}
SIZE_NAMES = {word: size for size, word in SIZE_WORDS.items()}


def mentions(caption: str) -> list[tuple[int, int, str, str, str | None]]:
    """Each object the caption names by colour and shape: (start, end) characters of its phrase from the shape
    word on ("star in the bottom left corner" of "a small red star in the bottom left corner and ..."), its colour,
    its shape and its size (a SIZES key, from the words just before the colour; None when none names it). The
    phrase ends before a joining word (and, while, with, into, a comma), another colour, the background's clause
    ("on a gray background") or the next object's words."""
    words = [(m.start(), m.end(), m.group()) for m in re.finditer(r"[\w-]+|,", caption)]
    named = [i + 1 for i in range(len(words) - 1) if words[i][2] in COLORS and words[i + 1][2] in SHAPE_WORDS]
    found = []
    for k, i in enumerate(named):
        limit = named[k + 1] - 1 if k + 1 < len(named) else len(words)  # the next object's colour word
        while limit > i + 1 and words[limit - 1][2] in MODIFIERS:
            limit -= 1
        stop = i + 1
        while stop < limit and not ends_phrase([w for _, _, w in words[stop:stop + 6]]):
            stop += 1
        before = i - 2  # the colour's modifiers, back to the first word that is none
        while before >= 0 and words[before][2] in MODIFIERS and words[before][2] not in SIZE_NAMES:
            before -= 1
        size = SIZE_NAMES.get(words[before][2]) if before >= 0 else None
        found.append((words[i][0], words[stop - 1][1], words[i - 1][2], SHAPE_WORDS[words[i][2]], size))
    return found


def ends_phrase(ahead: list[str]) -> bool:
    """Whether an object's phrase ends before ahead[0] (the words from there on)."""
    return ahead[0] in JOINS or ahead[0] in COLORS or (ahead[0] in ("on", "across") and "background" in ahead)


def batches(rows: list[tuple[list[int], torch.Tensor]], batch_size: int, pad: int, rng: np.random.Generator):
    """Endless shuffled batches: (input ids [B, L], labels with -100 on the padding, attention mask, binding
    labels [B, L, 2])."""
    while True:
        order = rng.permutation(len(rows))
        for start in range(0, len(rows) - batch_size + 1, batch_size):
            chosen = [rows[i] for i in order[start:start + batch_size]]
            x, mask = right_pad([ids for ids, _ in chosen], pad)
            yield x, x.masked_fill(mask == 0, -100), mask, right_pad([b for _, b in chosen], -100)[0]


READ_LAYERS = (-3, -2)  # what stage 0's native text encoder and the VLM path read


def identity_loss(hidden_states, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of reading each token back from its own state at READ_LAYERS: the unit-RMS state against
    every unit-norm token embedding (cosine x sqrt(hidden)), over the tokens that are not padding."""
    keep = labels != -100
    directions = F.normalize(embeddings, dim=-1)  # [vocab, hidden]
    losses = []
    for layer in READ_LAYERS:
        h = hidden_states[layer][keep].float()
        logits = F.rms_norm(h, (h.shape[-1],)) @ directions.float().T
        losses.append(F.cross_entropy(logits, labels[keep]))
    return torch.stack(losses).mean()


def binding_loss(hidden_states, heads: torch.nn.ModuleList, binding: torch.Tensor,
                 bound: tuple[int, ...] = (0, 1)) -> torch.Tensor:
    """Cross-entropy of reading each object phrase's attributes (`chat_tokens`' columns `bound`: colour and shape,
    and size with `--bind color,shape,size`) from its tokens' unit-RMS states at READ_LAYERS, through a linear
    head per layer and attribute (heads[len(bound) * layer + k]), thrown away after training. A held-out pair's
    state must then say which colour (size) goes with which shape and place: the MMDiT's text tokens carry no
    positions, so nothing else can tell it."""
    losses = []
    for n, layer in enumerate(READ_LAYERS):
        h = hidden_states[layer].float()
        h = F.rms_norm(h, (h.shape[-1],))
        for k, attribute in enumerate(bound):
            keep = binding[..., attribute] != -100
            if keep.any():  # a batch of captions that name no object by colour and shape reads nothing here
                losses.append(F.cross_entropy(heads[len(bound) * n + k](h[keep]), binding[..., attribute][keep]))
    return torch.stack(losses).mean() if losses else h.new_zeros(())


def train(out: Path, steps: int, batch_size: int, lr: float, text: dict, captions: int, seed: int,
          device: str, list_objects: bool = True, identity: float = 0.0, binding: float = 0.0,
          init: Path | None = None, bind: tuple[str, ...] = ("color", "shape")) -> Path:
    """Train the tiny Qwen3-VL into `out` (see the module's text); `init`: a folder of one to go on from (its
    tokenizer and sizes are kept, `text` is then unused)."""
    if out.exists():
        raise VinoInputError(f"--out {out} exists; remove it or choose another folder")
    if not bind or any(name not in BOUND for name in bind):
        raise VinoInputError(f"--bind {','.join(bind)}: expected attributes from {', '.join(BOUND)}")
    if init is not None and not (Path(init) / "config.json").is_file():
        raise VinoInputError(f"--init {init}: expected a Qwen3-VL folder with config.json")
    pairs = world_captions(captions, seed)
    with atomic_output(out) as partial:  # the folder appears whole, or not at all
        if init is None:
            make_tiny_qwen3vl(partial, seed=seed, corpus=[part for pair in pairs for part in pair], text=text)
        else:
            shutil.copytree(init, partial, dirs_exist_ok=True)
        train_into(partial, pairs, steps, batch_size, lr, seed, device, list_objects, identity, binding,
                   tuple(list(BOUND).index(name) for name in bind))
    return out


def train_into(folder: Path, pairs: list[tuple[str, str]], steps: int, batch_size: int, lr: float, seed: int,
               device: str, list_objects: bool, identity: float, binding: float,
               bound: tuple[int, ...] = (0, 1)) -> None:
    """`train`'s work on the Qwen3-VL in `folder` (its captions and replies: `pairs`), saved there."""
    processor = AutoProcessor.from_pretrained(folder)
    model = Qwen3VLForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).to(device)
    tokenizer = processor.tokenizer
    rows = [chat_tokens(tokenizer, caption, objects if list_objects else "") for caption, objects in pairs]
    log.info("language model: %s parameters, %d captions, %.1f tokens each, %.1f in object phrases",
             f"{sum(p.numel() for p in model.model.language_model.parameters()):,}", len(rows),
             np.mean([len(ids) for ids, _ in rows]), np.mean([float((b[:, 0] >= 0).sum()) for _, b in rows]))
    hidden = model.config.text_config.hidden_size
    columns = list(BOUND.values())
    heads = torch.nn.ModuleList(torch.nn.Linear(hidden, len(columns[k])) for _ in READ_LAYERS for k in bound).to(device)
    params = [p for n, p in model.named_parameters() if "visual" not in n] + list(heads.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, 0.5 * (1 + math.cos(math.pi * min(s / steps, 1.0)))))
    model.train()
    started = time.perf_counter()
    stream = batches(rows, batch_size, tokenizer.pad_token_id, np.random.default_rng(seed))
    for step in range(1, steps + 1):
        x, labels, mask, labelled = (t.to(device) for t in next(stream))
        with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=device != "cpu"):
            result = model(input_ids=x, attention_mask=mask, labels=labels, output_hidden_states=identity + binding > 0)
            readback = identity_loss(result.hidden_states, model.get_input_embeddings().weight, labels) \
                if identity else torch.zeros(())
            tied = binding_loss(result.hidden_states, heads, labelled, bound) if binding else torch.zeros(())
            loss = result.loss + identity * readback + binding * tied
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        if step % 100 == 0 or step == steps:
            log.info("step %d/%d: next-token loss %.4f, identity loss %.4f, binding loss %.4f (%.0f s)", step, steps,
                     result.loss.item(), readback.item(), tied.item(), time.perf_counter() - started)
    model.eval().to("cpu").save_pretrained(folder, safe_serialization=True)
    for layer in READ_LAYERS:
        for where in ("sequence", "word"):
            separation = attribute_separation(folder, layer, where)
            log.info("text states at hidden_states[%d] move %s when one word changes (%s)", layer,
                     ", ".join(f"{v:.3f} for {k}" for k, v in separation.items()), where)


SEPARATION_PROMPT = "a picture of a {size} {color} {shape} in the center on a white background"


@torch.no_grad()
def attribute_separation(folder: Path, layer: int = -3, where: str = "sequence") -> dict[str, float]:
    """How far the language model's states at `layer` move when one word of a caption changes, for shape,
    colour and size words: the mean squared difference over the states' mean square, averaged over every
    pair of values of that attribute whose captions have as many tokens. `where` is "sequence" (all the
    caption's tokens: how far the word's meaning spreads) or "word" (only the tokens that differ: whether the
    word itself stays readable at this layer). An attribute whose words hardly move the states is one the
    MMDiT can hardly read."""
    if where not in ("sequence", "word"):
        raise VinoInputError(f"attribute_separation: where must be 'sequence' or 'word', got {where!r}")
    processor = AutoProcessor.from_pretrained(folder)
    model = Qwen3VLForConditionalGeneration.from_pretrained(folder, dtype=torch.float32)
    native = NativeTextEncoder(model.model.language_model, processor.tokenizer, layer, max_tokens=256)
    base = {"size": "small", "color": "red", "shape": "circle"}
    values = {"shape": SHAPES, "color": list(COLORS), "size": [SIZE_WORDS[s] for s in SIZES]}
    separation = {}
    for attribute, options in values.items():
        captions = [SEPARATION_PROMPT.format(**{**base, attribute: v}) for v in options]
        ids = [torch.tensor(native.caption_ids(c)) for c in captions]
        states = native(captions)
        distances = []
        for (ia, a), (ib, b) in itertools.combinations(zip(ids, states), 2):
            if a.shape != b.shape:
                continue
            if where == "word":
                changed = torch.cat([ia != ib, torch.zeros(1, dtype=torch.bool)])  # the end token never differs
                a, b = a[changed], b[changed]
            distances.append((a - b).pow(2).mean() / a.pow(2).mean())
        separation[attribute] = float(torch.stack(distances).mean())
    return separation


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = argparse.ArgumentParser(prog="python -m training.language", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="the Qwen3-VL folder to write (must not exist)")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--captions", type=int, default=40000, help="captions drawn from the world's train split")
    p.add_argument("--hidden", type=int, default=128, help="language model width")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--captions-only", action="store_true",
                   help="learn the captions alone, without the reply that lists their objects")
    p.add_argument("--identity", type=float, default=1.0,
                   help="weight of reading each token back from its own state at the layers VINO reads (0: off)")
    p.add_argument("--binding", type=float, default=1.0,
                   help="weight of reading each object phrase's attributes (--bind) from its states (0: off)")
    p.add_argument("--bind", default="color,shape",
                   help="the attributes the binding term reads, from color, shape, size (size: the sizes twin's word)")
    p.add_argument("--init", type=Path, help="a tiny Qwen3-VL folder to go on from (keeps its tokenizer and sizes)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    if args.hidden % args.heads:
        raise SystemExit(f"--hidden {args.hidden} must be a multiple of --heads {args.heads}")
    text = {"hidden_size": args.hidden, "intermediate_size": 3 * args.hidden, "num_hidden_layers": args.layers,
            "num_attention_heads": args.heads, "num_key_value_heads": max(1, args.heads // 2),
            "head_dim": args.hidden // args.heads}
    return run_cli(lambda: print(train(args.out, args.steps, args.batch_size, args.lr, text, args.captions,
                                       args.seed, args.device, not args.captions_only, args.identity,
                                       args.binding, args.init, tuple(args.bind.split(",")))))


if __name__ == "__main__":
    sys.exit(main())
