"""Session 46: does the number word move the copies drawn, or does the noise? Each count prompt of a world split is
drawn twice from the same noise (the same task index): under its own number and under the other one (two <-> three).

    python count_swap.py tasks TASKS SWAPPED        # TASKS' captions with two and three exchanged, into SWAPPED
    python -m vino_model.generate --model BUNDLE --tasks SWAPPED --out SWAPPED_OUTPUTS
    python count_swap.py compare DATA OUTPUTS SWAPPED_OUTPUTS   # OUTPUTS: the same bundle's outputs of TASKS

Session 46: TASKS /tmp/s45/h13/tasks_count.json (the 72 count prompts of a held-out t2i world, seed 13, made as the
session 45 write-up says); OUTPUTS /tmp/s46/ev-b46-h13 and /tmp/s45/ev-b42-h13.
"""
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from embedded_count import count_prompts, found_counts  # noqa: E402


def swapped(tasks, out):
    entries = json.loads(Path(tasks).read_text())
    for entry in entries:
        words = entry["caption"].split(" ")
        at = next(i for i, w in enumerate(words) if w in ("two", "three"))
        words[at] = {"two": "three", "three": "two"}[words[at]]
        entry["caption"] = " ".join(words)
    Path(out).write_text(json.dumps(entries, indent=1))


def compare(data, outputs, swapped_outputs):
    prompts = count_prompts(data)
    own, other = found_counts(prompts, outputs), found_counts(prompts, swapped_outputs)
    two = {i: own[i] if p == 2 else other[i] for i, (p, _) in prompts.items()}  # copies found under "two"
    three = {i: other[i] if p == 2 else own[i] for i, (p, _) in prompts.items()}
    n = len(prompts)
    more, fewer = sum(three[i] > two[i] for i in prompts), sum(three[i] < two[i] for i in prompts)
    print(f"same copies under both numbers {sum(two[i] == three[i] for i in prompts)} / {n}; "
          f"'three' draws more {more}, fewer {fewer}")
    for word, found, right in (("two", two, 2), ("three", three, 3)):
        print(f"under '{word}': mean {sum(found.values()) / n:.2f}, "
              f"right {sum(v == right for v in found.values())} / {n}, "
              f"copies found {dict(sorted(Counter(found.values()).items()))}")


if __name__ == "__main__":
    {"tasks": swapped, "compare": compare}[sys.argv[1]](*sys.argv[2:])
