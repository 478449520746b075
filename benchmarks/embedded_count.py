"""How many copies a model draws for the count prompts of a world split ("three small blue squares"), as the count
check of training.bench finds them: for each prompted number, how many prompts drew 0, 1, 2, ... copies of the
prompted colour and shape, and how many drew the number prompted.

    python benchmarks/embedded_count.py DATA OUTPUTS [--base BASE_OUTPUTS]
    python benchmarks/embedded_count.py DATA --ground-truth

DATA is a world split (its manifest.jsonl: data/embedded/heldout-t2i120, or any `python -m training.world` split);
OUTPUTS holds its t2i outputs as training.bench reads them (scripts/score_heldout.sh's OUTPUTS/t2i120, or
`python -m vino_model.generate --out`). With --base, a second model's outputs of the same prompts: prompt by
prompt, how many it drew right that OUTPUTS drew wrong and the reverse, with the two-sided sign test's p-value.
--ground-truth counts the split's own targets, which must all come out right.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from paired_scores import sign_test  # noqa: E402
from training.bench import count_found, output_file, prompted_count  # noqa: E402
from training.manifest import load_media, read_manifest  # noqa: E402
from vino_model.errors import VinoInputError, run_cli  # noqa: E402

MOST = 5  # copies found from which the table has one column


def count_prompts(data: str) -> dict[int, tuple[int, object]]:
    """Manifest index -> (copies prompted, record) for each count prompt of a world split."""
    manifest = Path(data) / "manifest.jsonl"
    if not manifest.is_file():
        raise VinoInputError(f"DATA {data}: no manifest.jsonl; expected a split that python -m training.world wrote")
    prompts = {index: (prompted, record) for index, record in enumerate(read_manifest(str(manifest)))
               if (prompted := prompted_count(record.meta))}
    if not prompts:
        raise VinoInputError(f"DATA {data}: no count prompts; expected t2i scenes of two or more copies of one object")
    return prompts


def found_counts(prompts: dict, outputs: str | None) -> dict[int, int | None]:
    """Manifest index -> copies found in its output (None: no output); outputs None counts the targets."""
    if outputs is not None and not Path(outputs).is_dir():
        raise VinoInputError(f"OUTPUTS {outputs} is not a folder; expected the t2i outputs of DATA's prompts")
    found = {}
    for index, (_, record) in prompts.items():
        path = record.target if outputs is None else output_file(outputs, index, "t2i")
        found[index] = None if path is None else count_found(record.meta, load_media(path))
    return found


def table(prompts: dict, found: dict) -> list[str]:
    """One row per number prompted: prompts, how many drew 0 .. MOST+ copies, missing outputs, and right."""
    columns = [str(n) for n in range(MOST)] + [f"{MOST}+"]
    lines = ["| prompted | prompts | found " + " | ".join(columns) + " | missing | right |",
             "|---" * (len(columns) + 4) + "|"]
    for number in sorted({p for p, _ in prompts.values()}):
        mine = [found[i] for i, (p, _) in prompts.items() if p == number]
        seen = Counter(min(f, MOST) for f in mine if f is not None)
        cells = [str(len(mine))] + [str(seen[n]) for n in range(MOST + 1)] + \
            [str(mine.count(None)), f"{sum(f == number for f in mine)} / {len(mine)}"]
        lines.append(f"| {number} | " + " | ".join(cells) + " |")
    right = sum(found[i] == p for i, (p, _) in prompts.items())
    blanks = " | ".join([""] * (len(columns) + 1))
    lines.append(f"| all | {len(prompts)} | {blanks} | {right} / {len(prompts)} |")
    return lines


def paired(prompts: dict, found: dict, base: dict) -> str:
    """Prompts this model drew right and the base wrong, the reverse, and the sign test over them."""
    better = sum(found[i] == p != base[i] for i, (p, _) in prompts.items())
    worse = sum(base[i] == p != found[i] for i, (p, _) in prompts.items())
    return f"against the base: right where it was wrong {better}, wrong where it was right {worse}, " \
           f"sign test p = {sign_test(better, worse):.3f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/embedded_count.py", description=__doc__.split("\n")[0])
    parser.add_argument("data", metavar="DATA", help="a world split (its manifest.jsonl)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("outputs", metavar="OUTPUTS", nargs="?", help="the model's t2i outputs of DATA's prompts")
    source.add_argument("--ground-truth", action="store_true", help="count DATA's own targets")
    parser.add_argument("--base", metavar="BASE_OUTPUTS", help="another model's outputs of the same prompts")
    parser.add_argument("--prompts", action="store_true", help="also print each prompt's copies found")
    args = parser.parse_args(argv)

    def command():
        prompts = count_prompts(args.data)
        found = found_counts(prompts, args.outputs)
        if args.prompts:
            for index, (number, record) in prompts.items():
                print(f"{index:5d}  prompted {number}  found {found[index]}  {record.caption_long}")
        print("\n".join(table(prompts, found)))
        if args.base:
            print(paired(prompts, found, found_counts(prompts, args.base)))

    return run_cli(command)


if __name__ == "__main__":
    raise SystemExit(main())
