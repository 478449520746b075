"""The table of benchmarks/scaling.sh: speed-up and efficiency per GPU count, for the sequence-parallel forward
(`sp-N.json` from benchmarks/parallel.py) and for ZeRO-2 training (`train-N.jsonl`, the training log).

    python benchmarks/scaling_table.py OUT_DIR > OUT_DIR/scaling.md
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

# xDiT's HunyuanVideo 13B at 720p, 129 frames, 50 steps on H100s (../shared/spec/anchors.md): 1,904 / 925 / 514 / 338 s
ANCHOR_SECONDS = {1: 1904.0, 2: 925.0, 4: 514.0, 8: 338.0}
TRAIN_WINDOW = 2  # the training rate is the mean of the last windows logged, after the first (start-up) ones


def counts(folder: Path, pattern: str) -> dict[int, Path]:
    found = {}
    for path in folder.glob(pattern.replace("N", "*")):
        match = re.fullmatch(pattern.replace("N", r"(\d+)").replace(".", r"\."), path.name)
        if match:
            found[int(match.group(1))] = path
    return dict(sorted(found.items()))


def inference_rows(folder: Path) -> list[str]:
    runs = {n: json.loads(p.read_text()) for n, p in counts(folder, "sp-N.json").items()}
    if 1 not in runs:
        return ["no one-GPU forward (sp-1.json): no speed-ups"] if runs else []
    one = runs[1]["seconds"]
    rows = ["| GPUs | forward (s) | speed-up | efficiency | public anchor speed-up | rel. error vs one GPU | peak GiB |",
            "|---|---|---|---|---|---|---|"]
    for n, run in runs.items():
        speedup = one / run["seconds"]
        anchor = ANCHOR_SECONDS[1] / ANCHOR_SECONDS[n] if n in ANCHOR_SECONDS else None
        error = run.get("rel_error_vs_one_gpu")
        rows.append(f"| {n} | {run['seconds']:.3f} | {speedup:.2f}x | {speedup / n:.0%} | "
                    f"{'-' if anchor is None else f'{anchor:.2f}x'} | {'-' if error is None else f'{error:.1e}'} | "
                    f"{run['peak_gib']} |")
    return rows


def tokens_per_s(log: Path) -> float | None:
    rates = [r["tokens_per_s"] for r in map(json.loads, log.read_text().splitlines()) if "tokens_per_s" in r]
    rates = rates[1:][-TRAIN_WINDOW:]  # the first window holds the start-up
    return sum(rates) / len(rates) if rates else None


def training_rows(folder: Path) -> list[str]:
    runs = {n: tokens_per_s(p) for n, p in counts(folder, "train-N.jsonl").items()}
    if not runs:
        return []
    rows = ["| GPUs | tokens/s (all GPUs) | tokens/s per GPU | per GPU vs the fewest GPUs |", "|---|---|---|---|"]
    base = next(((n, rate) for n, rate in runs.items() if rate), None)
    for n, rate in runs.items():
        if rate is None:
            rows.append(f"| {n} | no step logged | | |")
            continue
        relative = (rate / n) / (base[1] / base[0])
        rows.append(f"| {n} | {rate:,.0f} | {rate / n:,.0f} | {relative:.0%} |")
    return rows


def table(folder: Path) -> str:
    parts = []
    inference, training = inference_rows(folder), training_rows(folder)
    if inference:
        parts += ["Sequence-parallel forward of the 13B MMDiT, one reference, the release's default size:", "",
                  *inference, ""]
    if training:
        parts += ["ZeRO-2 training of the 13B MMDiT (stage 0, 5,184 tokens a sample, batch 1 a GPU):", "", *training, ""]
    return "\n".join(parts) if parts else f"no sp-N.json or train-N.jsonl in {folder}\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folder", type=Path)
    print(table(p.parse_args(argv).folder), end="")


if __name__ == "__main__":
    main()
