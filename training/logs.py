"""What a run reports (rank 0): a progress bar with loss, step rate, tokens/s and ETA; JSON-lines records
in RUN/logs/train.jsonl; the same scalars in TensorBoard under RUN/logs/tensorboard."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

from torch.utils._python_dispatch import TorchDispatchMode
from tqdm import tqdm


class OpCount(TorchDispatchMode):
    """`with OpCount() as count:` counts the tensor ops dispatched inside (count.ops). A small model's step is
    bound by the host launching its ops, so this count, unlike a time, says the same on every machine."""

    ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        return func(*args, **(kwargs or {}))


class StepClock:
    """Host seconds of each phase of a training step: `lap(name)` charges the time since the last lap to name.
    Where the step waits for the GPU shows as the phase that reads a result back ("wait")."""

    def __init__(self):
        self.phases, self.last = Counter(), time.perf_counter()

    def start(self) -> None:
        self.phases, self.last = Counter(), time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.phases[phase] += now - self.last
        self.last = now


class Logger:
    def __init__(self, out: Path, cfg, start: int, enabled: bool):
        self.enabled, self.every, self.total = enabled, cfg.log.every, cfg.run.steps
        self.window = {"loss": 0.0, "tokens": 0, "seconds": 0.0, "steps": 0}
        self.phases = Counter()
        if not enabled:
            return
        folder = out / "logs"
        folder.mkdir(parents=True, exist_ok=True)
        self.jsonl = open(folder / "train.jsonl", "a", encoding="utf-8")
        self.tensorboard = None
        if cfg.log.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(folder / "tensorboard"), purge_step=start)
        self.bar = tqdm(total=cfg.run.steps, initial=start, unit="step", disable=not cfg.log.progress,
                        dynamic_ncols=True)

    def write(self, step: int, **values) -> None:
        """One JSON line {step, time, ...} and a TensorBoard scalar for each number."""
        if not self.enabled:
            return
        self.jsonl.write(json.dumps({"step": step, "time": round(time.time(), 3), **values}) + "\n")
        self.jsonl.flush()
        if self.tensorboard is not None:
            for name, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.tensorboard.add_scalar(name, value, step)

    def step(self, step: int, loss: float, tokens: int, seconds: float, phases: Counter = None, **values) -> None:
        """After each optimizer step; a record every log.every steps (and at the last) holds window means, with
        ms_PHASE for each of the step's `phases` (seconds, from a StepClock)."""
        if not self.enabled:
            return
        window = self.window
        window["loss"] += loss
        window["tokens"] += tokens
        window["seconds"] += seconds
        window["steps"] += 1
        self.phases.update(phases or {})
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tokens / max(seconds, 1e-9):.0f}")
        if step % self.every and step != self.total:
            return
        self.write(
            step,
            loss=window["loss"] / window["steps"],
            tokens_per_s=window["tokens"] / max(window["seconds"], 1e-9),
            steps_per_s=window["steps"] / max(window["seconds"], 1e-9),
            **{f"ms_{name}": round(1000 * total / window["steps"], 3) for name, total in self.phases.items()},
            **values,
        )
        self.window, self.phases = dict.fromkeys(window, 0), Counter()

    def message(self, text: str) -> None:
        if self.enabled:
            self.bar.write(text)

    def close(self) -> None:
        if self.enabled:
            self.bar.close()
            self.jsonl.close()
            if self.tensorboard is not None:
                self.tensorboard.close()
