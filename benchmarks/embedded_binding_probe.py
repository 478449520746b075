"""Does the embedded default's language model tie each colour (or size) to its shape? A linear probe of its prompt
states.

The MMDiT of the embedded default draws two-object scenes with the objects' colours or shapes traded
(`benchmarks/results/2026-12-03/embedded-session28.md`). Either the language model's states never say which colour
goes with which shape, or they do and the MMDiT does not use it. For t2i captions of two objects of two colours
("a small yellow circle on the left and a large green star ..."), this takes the state at each object's shape
word at every layer of the language model, as VINO's prompt reads it (the chat template, text only), and fits a
linear probe (softmax regression) from it to that object's colour on train-split captions. It scores the probe on
other train-split captions (the pairs the language model read) and on held-out-split captions, whose first object
is a colour x shape pair it never read. High accuracy at hidden_states[-2] (the layer VINO reads): the states
carry the binding. Chance is one in the colours' count. A held-out pair is one the probe never saw either, so its
fit of which colours a shape takes in the train split counts against it there (the embeddings' row shows how
much). The probe's accuracy on the other object's colour, from the same state, is how much that colour leaks in.

With `--attribute size` it reads each object's size instead, in captions of two objects of two sizes: what the
"sizes" twin (training.world.swap_sizes) asks the MMDiT to tell apart. With `--attribute count`, the number of
copies in a count caption, at the plural shape word ("circles" in "three small green circles ..."): the count twin's.

    python benchmarks/embedded_binding_probe.py [--qwen training/embedded-src/qwen3vl] [--train 800 --test 300]
        [--attribute size|count]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch
from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.language import mentions  # noqa: E402
from training.world import COLORS, COUNT_TWINS, NUMBERS, PLURALS, SIZES, count_copies, sample  # noqa: E402
from vino_model.encoder import render_prompt  # noqa: E402

ATTRIBUTES = {"color": COLORS, "size": SIZES, "count": NUMBERS}  # what the probe reads, and its values


def pair_captions(split: str, count: int, seed: int, attribute: str = "color") -> list[tuple[str, list[dict]]]:
    """`count` t2i captions of two objects of two colours (or sizes: `attribute`) from `split`, with their two objects
    in caption order."""
    found, index = [], 0
    while len(found) < count:
        meta, long, _ = sample("t2i", seed, index, 128, 128, 1, split)
        index += 1
        objects = meta["scene"]["objects"]
        if len(objects) == 2 and objects[0][attribute] != objects[1][attribute] and \
                objects[0]["color"] != objects[1]["color"]:
            found.append((long, objects))
    return found


@torch.no_grad()
def shape_states(vlm, processor, captions, at: str = "shape",
                 attribute: str = "color") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """States [layers + 1, N, hidden] at the last token of each object's shape word (`at` "shape") or of its phrase
    (`at` "place": "corner" in "a red star in the bottom left corner and ..."), its colour (or size: `attribute`)
    [N] and the other object's [N] (indices into COLORS or SIZES)."""
    values = list(ATTRIBUTES[attribute])
    tokenizer = processor.tokenizer
    states, own, other = [], [], []
    for caption, objects in captions:
        prompt = render_prompt(processor, caption, 0, False)
        encoded = tokenizer(prompt, return_offsets_mapping=True)
        ids, ends = encoded["input_ids"], [end for _, end in encoded["offset_mapping"]]
        phrases = mentions(caption)
        if [(c, s) for _, _, c, s, _ in phrases] != [(o["color"], o["shape"]) for o in objects]:
            raise ValueError(f"the caption's objects are not the scene's, in order: {caption!r}")
        base = prompt.index(caption)
        positions = [ends.index(base + (end if at == "place" else start + len(shape)))
                     for start, end, _, shape, _ in phrases]
        tokens = torch.tensor([ids])
        hidden = vlm.model.language_model(input_ids=tokens, output_hidden_states=True).hidden_states
        for k, position in enumerate(positions):
            states.append(torch.stack([layer[0, position] for layer in hidden]))
            own.append(values.index(objects[k][attribute]))
            other.append(values.index(objects[1 - k][attribute]))
    return torch.stack(states, 1).float(), torch.tensor(own), torch.tensor(other)


@torch.no_grad()
def count_states(vlm, processor, split: str, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`shape_states` for `count` t2i captions of copies of one object ("three small green circles ..."): the states
    at the plural shape word, the number [N] and its count twin's (COUNT_TWINS) [N] (indices into NUMBERS)."""
    numbers, tokenizer = list(NUMBERS), processor.tokenizer
    states, own, other, index = [], [], [], 0
    while len(own) < count:
        meta, caption, _ = sample("t2i", seed, index, 128, 128, 1, split)
        index += 1
        objects = meta["scene"]["objects"]
        if count_copies(objects) is None:
            continue
        words = [(m.start(), m.end(), m.group()) for m in re.finditer(r"[\w-]+", caption)]
        named = [end for _, end, word in words if word == PLURALS[objects[0]["shape"]]]
        if NUMBERS[len(objects)] not in [word for _, _, word in words] or not named:
            continue  # a caption that names them otherwise
        prompt = render_prompt(processor, caption, 0, False)
        encoded = tokenizer(prompt, return_offsets_mapping=True)
        position = [end for _, end in encoded["offset_mapping"]].index(prompt.index(caption) + named[0])
        hidden = vlm.model.language_model(input_ids=torch.tensor([encoded["input_ids"]]),
                                          output_hidden_states=True).hidden_states
        states.append(torch.stack([layer[0, position] for layer in hidden]))
        own.append(numbers.index(len(objects)))
        other.append(numbers.index(COUNT_TWINS[len(objects)]))
    return torch.stack(states, 1).float(), torch.tensor(own), torch.tensor(other)


def probe_accuracy(train_x, train_y, test_x, test_ys, classes: int, steps: int = 500) -> list[float]:
    """Softmax regression fitted on (train_x, train_y) (features standardised on the train set); its accuracy on
    test_x against each of test_ys."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    torch.manual_seed(0)
    probe = torch.nn.Linear(train_x.shape[1], classes)
    optimizer = torch.optim.Adam(probe.parameters(), lr=0.05, weight_decay=1e-3)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(probe(train_x), train_y).backward()
        optimizer.step()
    predicted = probe(test_x).argmax(-1)
    return [float((predicted == y).float().mean()) for y in test_ys]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--qwen", default="training/embedded-src/qwen3vl", help="the tiny Qwen3-VL folder")
    p.add_argument("--train", type=int, default=800, help="train-split captions to fit the probe on")
    p.add_argument("--test", type=int, default=300, help="held-out-split captions to score it on")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--at", choices=("shape", "place"), default="shape",
                   help="read the state at each object's shape word, or at the last word of its phrase (its place)")
    p.add_argument("--attribute", choices=tuple(ATTRIBUTES), default="color",
                   help="the object's attribute to read: its colour, its size (the sizes twin's word), or the number "
                        "of copies in a count caption (the count twin's; read at the plural shape word)")
    args = p.parse_args(argv)
    values = ATTRIBUTES[args.attribute]
    vlm = Qwen3VLForConditionalGeneration.from_pretrained(args.qwen, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(args.qwen)

    def read(split: str, count: int, seed: int):
        if args.attribute == "count":
            return count_states(vlm, processor, split, count, seed)
        return shape_states(vlm, processor, pair_captions(split, count, seed, args.attribute), args.at, args.attribute)

    train_x, train_y, _ = read("train", args.train, args.seed)
    tests = {split: read(split, args.test, args.seed + 1) for split in ("train", "heldout")}
    layers = train_x.shape[0]
    scenes = "copies of one object" if args.attribute == "count" else f"two objects of two {args.attribute}s"
    print(f"fitted on {args.train} train-split captions of {scenes}, scored on {args.test} more of each split; "
          f"{len(values)} {args.attribute}s (chance {1 / len(values):.3f}); the state at each object's "
          f"{'shape' if args.attribute == 'count' else args.at} word")
    print(f"{'':<40} {'train split':>24} {'held-out split':>24}")
    own_name = f"own {args.attribute}"
    print(f"{'layer':<40} {own_name:>12}{'other':>12} {own_name:>12}{'other':>12}")
    for layer in range(layers):
        scores = [probe_accuracy(train_x[layer], train_y, x[layer], [own, other], len(values))
                  for x, own, other in tests.values()]
        name = "embeddings" if layer == 0 else f"layer {layer}"
        if layer == layers - 2:
            name += " (hidden_states[-2]: VINO reads it)"
        print(f"{name:<40} " + " ".join(f"{own:12.3f}{other:12.3f}" for own, other in scores))


if __name__ == "__main__":
    main()
