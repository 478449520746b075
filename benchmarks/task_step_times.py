"""Seconds a training step takes for each task, from a finished run's log alone.

A batch holds one task, and which task the n-th batch draws depends only on the seed and data.tasks
(`training.data.Sampler.task_of_draw`). So each logged window of steps (`log.every`) can be split into its
draws of each task, and the windows' times regressed on those counts by least squares:

    python benchmarks/task_step_times.py RUN/logs/train.jsonl training/configs/embedded/stage0.toml [key=value ...]
        [--from-step N]

prints the seconds of one step of each task and how well the fit holds (the config and its overrides must be
the run's: its seed, shares and gradient accumulation). --from-step leaves out the windows before step N: the
first epoch of a run that memoises its inputs is slower than the rest.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training.config import load as load_config  # noqa: E402
from training.data import Sampler  # noqa: E402


def windows(log_path, from_step: int = 0) -> list[tuple[int, int, float]]:
    """(first step, last step, seconds) of each logged window after the run's last start that begins at from_step
    or later (the first window after a start holds the start-up, so it is left out)."""
    rows = [json.loads(line) for line in Path(log_path).read_text().splitlines() if line.strip()]
    last_start = max((i for i, r in enumerate(rows) if r.get("event") == "start"), default=-1)
    steps = [r for r in rows[last_start + 1:] if "steps_per_s" in r]
    return [(a["step"], b["step"], (b["step"] - a["step"]) / b["steps_per_s"]) for a, b in zip(steps, steps[1:])
            if a["step"] >= from_step]


def fit(log_path, config, from_step: int = 0) -> tuple[list[str], np.ndarray, float, float]:
    """The tasks, seconds a step of each, the fit's rms error and the mean window time."""
    shares = config.data.tasks
    stand_ins = [SimpleNamespace(record=SimpleNamespace(task=t), shape=()) for t, s in shares.items() if s > 0]
    sampler = Sampler(stand_ins, shares, 1, config.run.seed, 0, 1)
    draws_per_step = config.optim.accumulation
    rows, times = [], []
    for first, last, seconds in windows(log_path, from_step):
        drawn = [sampler.task_of_draw(d) for d in range(first * draws_per_step, last * draws_per_step)]
        rows.append([drawn.count(t) / draws_per_step for t in sampler.tasks])
        times.append(seconds)
    if len(rows) < 3 * len(sampler.tasks):  # fewer leave the fit free to trade one task's time against another's
        raise SystemExit(f"{log_path}: {len(rows)} timed windows for {len(sampler.tasks)} tasks; the fit needs "
                         f"{3 * len(sampler.tasks)} (log more often: log.every)")
    counts, times = np.array(rows), np.array(times)
    per_step, *_ = np.linalg.lstsq(counts, times, rcond=None)
    rms = float(np.sqrt(((counts @ per_step - times) ** 2).mean()))
    return sampler.tasks, per_step, rms, float(times.mean())


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("log", help="the run's logs/train.jsonl")
    p.add_argument("config", help="the run's config file")
    p.add_argument("overrides", nargs="*", help="the run's key=value overrides")
    p.add_argument("--from-step", type=int, default=0, help="leave out the windows before this step")
    args = p.parse_args(argv)
    tasks, per_step, rms, mean = fit(args.log, load_config(args.config, args.overrides), args.from_step)
    for task, seconds in zip(tasks, per_step):
        print(f"{task:9s} {seconds:.3f} s a step")
    print(f"fit: rms error {rms:.2f} s on windows of {mean:.2f} s")


if __name__ == "__main__":
    main()
