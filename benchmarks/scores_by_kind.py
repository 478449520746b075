"""A model's held-out scores split by what each prompt asks: generation prompts by how many objects the scene holds,
edits by the edit's kind. A task's mean can hide one failing kind: in session 52 the committed seed scored t2v 0.87 on
one moving object and 0.00 on two, tv2v 0.74-1.00 on recolours, removals and backgrounds and 0.07 on replacements.

    python benchmarks/scores_by_kind.py data/embedded/heldout OUT/scores-video.json [MORE.json ...]

DATA is the world split the prompts came from (its manifest.jsonl: a score's index is its line); the score files
are `python -m training.bench --json` output (scripts/score_heldout.sh's OUT/scores-SET.json).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.manifest import read_manifest  # noqa: E402
from vino_model.errors import VinoInputError, run_cli  # noqa: E402


def kind_of(meta: dict) -> str:
    """An edit's kind ("replace", "recolor", ...), else the number of objects in the scene ("2 objects")."""
    if meta.get("edit"):
        return meta["edit"]["kind"]
    count = len(meta["scene"]["objects"])
    return f"{count} object{'s' if count != 1 else ''}"


def by_kind(records: list, scores: list[dict]) -> tuple[dict[tuple[str, str], list[dict]], int]:
    """(task, kind) -> the score records of its prompts, in the order given; and how many scores carry no caption
    (training.bench wrote none before session 52), whose prompts could not be checked against the manifest."""
    groups, unchecked = defaultdict(list), 0
    for score in scores:
        index = int(score["index"])
        record = records[index] if 0 <= index < len(records) else None
        caption = score.get("caption")
        if caption is None:
            unchecked += 1
        if (record is None or record.task != score["task"]
                or caption not in (None, record.caption_long, record.caption_short)):
            raise VinoInputError(f"the score of {score['task']} prompt {index} ({caption or 'no caption'!r}) is not "
                                 "this world split's prompt; expected scores of prompts from the split given as data")
        groups[(score["task"], kind_of(record.meta))].append(score)
    return dict(groups), unchecked


def format_table(groups: dict[tuple[str, str], list[dict]]) -> str:
    checks = sorted({name for group in groups.values() for r in group for name in r["checks"]})
    lines = ["| task | kind | prompts | score | " + " | ".join(checks) + " |",
             "|---|---|---|---|" + "---|" * len(checks)]
    for (task, kind), group in sorted(groups.items()):
        values = [[r["checks"][c] for r in group if c in r["checks"]] for c in checks]
        lines.append(f"| {task} | {kind} | {len(group)} | {np.mean([r['score'] for r in group]):.3f} | "
                     + " | ".join(f"{np.mean(v):.3f}" if v else "-" for v in values) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", type=Path, help="the world split the prompts came from (its manifest.jsonl)")
    p.add_argument("scores", type=Path, nargs="+", help="training.bench --json files of prompts from that split")
    args = p.parse_args(argv)

    def command():
        manifest = args.data / "manifest.jsonl"
        if not manifest.is_file():
            raise VinoInputError(f"data: {args.data} holds no manifest.jsonl; expected a world split (training.world)")
        scores = []
        for path in args.scores:
            try:
                scores += json.loads(path.read_text())
            except (OSError, ValueError) as error:
                raise VinoInputError(f"{path}: expected a training.bench --json file; {error}") from error
        groups, unchecked = by_kind(list(read_manifest(manifest)), scores)
        print(format_table(groups))
        if unchecked:
            print(f"({unchecked} scores carry no caption: that they are this split's prompts was not checked)")

    return run_cli(command)


if __name__ == "__main__":
    raise SystemExit(main())
