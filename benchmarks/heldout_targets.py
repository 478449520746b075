"""Models' held-out scores against issue 4's targets (t2i 0.90, every other task 0.80): each task's mean, how many
targets each model meets, and its sum of shortfalls, which a new seed must lower (the rule since session 58).

    python benchmarks/heldout_targets.py NAME=DIR [NAME=DIR ...]

DIR holds a model's scores-image.json, scores-video.json and scores-t2i120.json (scripts/score_heldout.sh's or
scripts/device_score.sh's sets). t2i is counted twice, as the write-ups have: on t2i120's 120 prompts and on the image
set's 24. A model without a set shows "-" for its tasks and no sum: a sum over fewer tasks would read as better.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.paired_scores import read_scores  # noqa: E402
from vino_model.errors import VinoInputError, run_cli  # noqa: E402

# (row, set file, task kind in it, target)
ROWS = [("t2i120", "t2i120", "t2i", 0.90), ("t2i", "image", "t2i", 0.90), ("ti2i", "image", "ti2i", 0.80),
        ("ti2i_ref", "image", "ti2i_ref", 0.80), ("t2v", "video", "t2v", 0.80), ("i2v", "video", "i2v", 0.80),
        ("ti2v", "video", "ti2v", 0.80), ("tv2v", "video", "tv2v", 0.80), ("tiv2v", "video", "tiv2v", 0.80),
        ("clone", "video", "clone", 0.80)]


def task_means(folder: Path) -> dict[str, float | None]:
    """Each row's mean score in `folder`, None where its set file is missing or scores none of the row's task."""
    sets = {}
    for name in {s for _, s, _, _ in ROWS}:
        path = folder / f"scores-{name}.json"
        sets[name] = read_scores(str(path))[0] if path.is_file() else None
    means = {}
    for row, name, task, _ in ROWS:
        scores = [v for (kind, _), v in (sets[name] or {}).items() if kind == task]
        means[row] = sum(scores) / len(scores) if scores else None
    return means


def table(models: dict[str, dict[str, float | None]]) -> str:
    names = list(models)
    lines = ["| task | target | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for row, _, _, target in ROWS:
        cells = ["-" if models[n][row] is None else f"{models[n][row]:.3f}" for n in names]
        lines.append(f"| {row} | {target:.2f} | " + " | ".join(cells) + " |")
    met, sums = [], []
    for n in names:
        means = models[n]
        met.append(f"{sum(means[r] is not None and means[r] >= t for r, _, _, t in ROWS)} / {len(ROWS)}")
        whole = all(means[r] is not None for r, _, _, _ in ROWS)
        sums.append(f"{sum(max(0.0, t - means[r]) for r, _, _, t in ROWS):.3f}" if whole else "-")
    lines.append("| targets met | | " + " | ".join(met) + " |")
    lines.append("| sum of shortfalls | | " + " | ".join(sums) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", metavar="NAME=DIR", help="a model's name and its folder of score files")
    args = p.parse_args(argv)

    def run():
        models = {}
        for spec in args.models:
            name, sep, folder = spec.partition("=")
            if not sep or not name or not Path(folder).is_dir():
                raise VinoInputError(f"model '{spec}': expected NAME=DIR, DIR a folder of scores-SET.json files")
            models[name] = task_means(Path(folder))
            if all(mean is None for mean in models[name].values()):
                raise VinoInputError(f"model '{spec}': {folder} has no scores-image.json, scores-video.json or "
                                     "scores-t2i120.json holding its tasks")
        print(table(models))
    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
