"""Two models on the same held-out prompts, prompt by prompt: for each task kind both mean scores and how many
prompts rose and fell, with the two-sided sign test's p-value over those that moved.

    python benchmarks/paired_scores.py OLD.json[,OLD2.json ...] NEW.json[,NEW2.json ...]

Each side is one or more `python -m training.bench --json` files (a comma-separated list: one model scored in
several runs, say some tasks on a CPU and the rest on a GPU); where a prompt is in several files of one side, the
later file's score counts. Both sides must score one held-out world: a prompt whose caption differs between two files
is an error, not a pair. Only prompts both sides scored are compared: "all tasks" is the mean of the task kinds'
means over the kinds both sides hold.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training.manifest import TASKS  # noqa: E402
from vino_model.errors import VinoInputError, run_cli  # noqa: E402


def read_scores(spec: str) -> tuple[dict[tuple[str, int], float], dict[tuple[str, int], str]]:
    """(task kind, prompt index) -> score, and -> the prompt's caption where the records give it, from a
    comma-separated list of training.bench --json files. A prompt two files hold must be one prompt: t2i120's world and
    the image set's both number their t2i prompts from 0, and one side mixing them would pair prompts that differ."""
    scores, captioned = {}, {}  # captioned: key -> (caption, the file that gave it)
    for name in spec.split(","):
        path = Path(name)
        try:
            records = json.loads(path.read_text())
            read = [((r["task"], int(r["index"])), float(r["score"]), r.get("caption")) for r in records]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise VinoInputError(f"{name}: expected a training.bench --json file (a list of task, index and score "
                                 f"records); {error}") from error
        for key, score, caption in read:
            if caption is not None:
                first, source = captioned.setdefault(key, (caption, name))
                if first != caption:
                    raise VinoInputError(f"{name}: {key[0]} prompt {key[1]} is {caption!r}, but {first!r} in "
                                         f"{source}; expected the files of one side to score one held-out world "
                                         "(pair t2i120 and the image set apart)")
            scores[key] = score
    return scores, {key: caption for key, (caption, _) in captioned.items()}


def sign_test(better: int, worse: int) -> float:
    """Two-sided p-value that rises and falls this uneven come from a fair coin."""
    n, k = better + worse, min(better, worse)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)


def compare(old: dict, new: dict) -> list[dict]:
    """One row per task kind both sides scored (in the world's order), and an "all tasks" row."""

    def row(task: str, prompts: int, old_mean: float, new_mean: float, better: int, worse: int) -> dict:
        return {"task": task, "prompts": prompts, "old": old_mean, "new": new_mean, "better": better, "worse": worse,
                "p": sign_test(better, worse)}

    shared = old.keys() & new.keys()
    rows = []
    for task in [t for t in TASKS if any(k[0] == t for k in shared)]:
        keys = sorted(k for k in shared if k[0] == task)
        rows.append(row(task, len(keys), sum(old[k] for k in keys) / len(keys), sum(new[k] for k in keys) / len(keys),
                        sum(new[k] > old[k] for k in keys), sum(new[k] < old[k] for k in keys)))
    if rows:
        rows.append(row("all tasks", sum(r["prompts"] for r in rows), sum(r["old"] for r in rows) / len(rows),
                        sum(r["new"] for r in rows) / len(rows), sum(r["better"] for r in rows),
                        sum(r["worse"] for r in rows)))
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| task | prompts | old | new | better / worse | sign test p |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['task']} | {r['prompts']} | {r['old']:.3f} | {r['new']:.3f} | {r['better']} / {r['worse']} | "
              f"{r['p']:.3f} |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("old", help="the model compared against: training.bench --json file(s), comma-separated")
    p.add_argument("new", help="the model compared: training.bench --json file(s), comma-separated")
    args = p.parse_args(argv)

    def run():
        (old, old_captions), (new, new_captions) = read_scores(args.old), read_scores(args.new)
        differ = sorted(k for k in old_captions.keys() & new_captions.keys() if old_captions[k] != new_captions[k])
        if differ:
            task, index = differ[0]
            raise VinoInputError(f"{args.old} and {args.new}: {task} prompt {index} is {old_captions[differ[0]]!r} "
                                 f"in one and {new_captions[differ[0]]!r} in the other ({len(differ)} such prompts); "
                                 "expected two models' scores on one held-out world")
        rows = compare(old, new)
        if not rows:
            raise VinoInputError(f"{args.old} and {args.new} share no scored prompt")
        print(table(rows))

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
