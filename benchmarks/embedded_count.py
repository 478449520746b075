"""How many copies a model draws for the count prompts of a world split ("three small blue squares"), as the count
check of training.bench finds them: for each prompted number, how many prompts drew 0, 1, 2, ... copies of the
prompted colour and shape, and how many drew the number prompted.

    python benchmarks/embedded_count.py DATA OUTPUTS [--base BASE_OUTPUTS] [--swapped SWAPPED_OUTPUTS] [--by-object]
    python benchmarks/embedded_count.py DATA --ground-truth
    python benchmarks/embedded_count.py DATA --tasks TASKS | --swapped-tasks TASKS

DATA is a world split (its manifest.jsonl: data/embedded/heldout-t2i120, or any `python -m training.world` split);
OUTPUTS holds its t2i outputs as training.bench reads them (scripts/score_heldout.sh's OUTPUTS/t2i120, or
`python -m vino_model.generate --out`). With --base, a second model's outputs of the same prompts: prompt by
prompt, how many it drew right that OUTPUTS drew wrong and the reverse, with the two-sided sign test's p-value.
--ground-truth counts the split's own targets, which must all come out right. --by-object also tallies the prompts
right by number and object ("red star"), since one object can carry most of a model's count.

--tasks writes the task file of DATA's count prompts alone, as the held-out sets caption them, so that
`python -m vino_model.generate --tasks TASKS` draws only them (scripts/count_heldout.sh).

The swap test asks whether the number word moves the copies drawn, or the noise does. --swapped-tasks writes a
task file of DATA's count prompts with "two" and "three" exchanged; `python -m vino_model.generate --tasks TASKS`
draws them from the noise that drew OUTPUTS (one seed for every prompt). With --swapped, the copies each prompt drew
under "two" and under "three", and for how many the word changed them. Session 46's model drew the same copies under
both words for 34 of 72 held-out prompts, session 42's for none.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from paired_scores import sign_test  # noqa: E402
from training.bench import count_found, output_file, prompted_count  # noqa: E402
from training.manifest import load_media, read_manifest, release_task  # noqa: E402
from training.world import NUMBERS, object_name, swap_count  # noqa: E402
from vino_model.errors import VinoInputError, run_cli  # noqa: E402
from vino_model.files import atomic_output  # noqa: E402

MOST = 5  # copies found from which the table has one column
COLUMNS = [str(n) for n in range(MOST)] + [f"{MOST}+"]
SWAPS = {2: 3, 3: 2}  # the number each count prompt is drawn under in the swap test


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


def row(number: int, drawn: list) -> list[str]:
    """The cells of the prompts drawn under `number` (copies found; None: no output): prompts, how many drew 0 ..
    MOST+ copies, missing outputs, and right."""
    seen = Counter(min(f, MOST) for f in drawn if f is not None)
    return [str(len(drawn))] + [str(seen[n]) for n in range(MOST + 1)] + \
        [str(drawn.count(None)), f"{sum(f == number for f in drawn)} / {len(drawn)}"]


def table(prompts: dict, found: dict) -> list[str]:
    """One row per number prompted (row's cells)."""
    lines = ["| prompted | prompts | found " + " | ".join(COLUMNS) + " | missing | right |",
             "|---" * (len(COLUMNS) + 4) + "|"]
    for number in sorted({p for p, _ in prompts.values()}):
        cells = row(number, [found[i] for i, (p, _) in prompts.items() if p == number])
        lines.append(f"| {number} | " + " | ".join(cells) + " |")
    right = sum(found[i] == p for i, (p, _) in prompts.items())
    blanks = " | ".join([""] * (len(COLUMNS) + 1))
    lines.append(f"| all | {len(prompts)} | {blanks} | {right} / {len(prompts)} |")
    return lines


def by_object(prompts: dict, found: dict) -> list[str]:
    """One row per number prompted and object ("red star"): how many of its prompts drew the number. A model's
    count can turn on one object: of the 8 "two" prompts that session 51's average drew as three, 7 were red stars."""
    keys = {i: (p, object_name(record.meta["scene"]["objects"][0], False)) for i, (p, record) in prompts.items()}
    groups = Counter(keys.values())
    right = Counter(keys[i] for i, (p, _) in prompts.items() if found[i] == p)
    return ["| prompted | object | prompts | right |", "|---|---|---|---|"] + [
        f"| {number} | {name} | {groups[number, name]} | {right[number, name]} / {groups[number, name]} |"
        for number, name in sorted(groups)]


def paired(prompts: dict, found: dict, base: dict, base_dir: str) -> str:
    """Prompts this model drew right and the base wrong, the reverse, and the sign test over them. Prompts without
    the base's output are left out (and named); a base with none of them is an error, not a base that drew none."""
    missing = [i for i in prompts if base[i] is None]
    if len(missing) == len(prompts):
        raise VinoInputError(f"--base {base_dir}: no t2i output of any count prompt (expected INDEX_t2i.png files, "
                             "as python -m vino_model.generate --out writes them)")
    kept = {i: prompt for i, prompt in prompts.items() if base[i] is not None}
    better = sum(found[i] == p != base[i] for i, (p, _) in kept.items())
    worse = sum(base[i] == p != found[i] for i, (p, _) in kept.items())
    line = f"against the base: right where it was wrong {better}, wrong where it was right {worse}, " \
           f"sign test p = {sign_test(better, worse):.3f}"
    return line + (f" ({len(missing)} prompts without the base's output left out)" if missing else "")


def swappable(prompts: dict) -> dict:
    """The count prompts the swap test draws under the other number (SWAPS)."""
    return {index: prompt for index, prompt in prompts.items() if prompt[0] in SWAPS}


def write_tasks(prompts: dict, path: str, swap: bool = False) -> int:
    """Write the task file of DATA's count prompts, as the held-out sets caption them, or (swap) those of SWAPS with
    their numbers exchanged; returns its entries."""
    entries = []
    for index, (number, record) in (swappable(prompts) if swap else prompts).items():
        caption = swap_count(record.caption_long, record.meta["scene"]["objects"], SWAPS[number]) if swap \
            else record.caption_long
        if caption is None:
            raise VinoInputError(f"DATA: prompt {index} ({record.caption_long!r}) does not name its copies in full; "
                                 "expected a split that python -m training.world wrote")
        entries.append({"index": index, "task": release_task(record.task).name, "caption": caption})
    if not entries:
        raise VinoInputError(f"DATA: no count prompts of {' or '.join(NUMBERS[n] for n in SWAPS)} to swap")
    with atomic_output(Path(path)) as partial:
        partial.write_text(json.dumps(entries, indent=1) + "\n")
    return len(entries)


def swap_table(prompts: dict, found: dict, swapped: dict) -> list[str]:
    """The copies each count prompt drew under each number of SWAPS (its own in `found`, the other in `swapped`),
    and for how many the number changed them."""
    pairs = swappable(prompts)
    under = {number: {i: found[i] if p == number else swapped[i] for i, (p, _) in pairs.items()}
             for number in sorted(SWAPS)}
    lines = ["| drawn under | prompts | mean copies | found " + " | ".join(COLUMNS) + " | missing | right |",
             "|---" * (len(COLUMNS) + 5) + "|"]
    for number, drawn in under.items():
        copies = [f for f in drawn.values() if f is not None]
        mean = f"{sum(copies) / len(copies):.2f}" if copies else "-"
        cells = row(number, list(drawn.values()))
        lines.append(f"| {NUMBERS[number]} | {cells[0]} | {mean} | " + " | ".join(cells[1:]) + " |")
    fewer_word, more_word = sorted(SWAPS)
    both = [i for i in pairs if under[fewer_word][i] is not None and under[more_word][i] is not None]
    more = sum(under[more_word][i] > under[fewer_word][i] for i in both)
    fewer = sum(under[more_word][i] < under[fewer_word][i] for i in both)
    lines.append(f"the number changed the copies for {more + fewer} / {len(both)} prompts drawn under both: "
                 f"more under \"{NUMBERS[more_word]}\" for {more}, fewer for {fewer}")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/embedded_count.py", description=__doc__.split("\n")[0])
    parser.add_argument("data", metavar="DATA", help="a world split (its manifest.jsonl)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("outputs", metavar="OUTPUTS", nargs="?", help="the model's t2i outputs of DATA's prompts")
    source.add_argument("--ground-truth", action="store_true", help="count DATA's own targets")
    source.add_argument("--tasks", metavar="TASKS", help="write the task file of DATA's count prompts "
                        "(python -m vino_model.generate --tasks), to draw them alone")
    source.add_argument("--swapped-tasks", metavar="TASKS",
                        help="write the task file of DATA's count prompts with two and three exchanged")
    parser.add_argument("--base", metavar="BASE_OUTPUTS", help="another model's outputs of the same prompts")
    parser.add_argument("--swapped", metavar="SWAPPED_OUTPUTS",
                        help="the same model's outputs of --swapped-tasks, from the same seed as OUTPUTS")
    parser.add_argument("--prompts", action="store_true", help="also print each prompt's copies found")
    parser.add_argument("--by-object", action="store_true",
                        help="also tally the prompts right by number and object (colour and shape)")
    args = parser.parse_args(argv)

    if args.swapped and not args.outputs:
        parser.error("--swapped needs OUTPUTS: the outputs of DATA's own prompts from the same seed")

    def command():
        prompts = count_prompts(args.data)
        if args.swapped_tasks:
            print(f"{args.swapped_tasks}: {write_tasks(prompts, args.swapped_tasks, swap=True)} count prompts, two "
                  "and three exchanged")
            return
        if args.tasks:
            print(f"{args.tasks}: {write_tasks(prompts, args.tasks)} count prompts")
            return
        found = found_counts(prompts, args.outputs)
        if args.prompts:
            for index, (number, record) in prompts.items():
                print(f"{index:5d}  prompted {number}  found {found[index]}  {record.caption_long}")
        print("\n".join(table(prompts, found)))
        if args.by_object:
            print("\n".join(by_object(prompts, found)))
        if args.base:
            print(paired(prompts, found, found_counts(prompts, args.base), args.base))
        if args.swapped:
            print("\n".join(swap_table(prompts, found, found_counts(swappable(prompts), args.swapped))))

    return run_cli(command)


if __name__ == "__main__":
    raise SystemExit(main())
