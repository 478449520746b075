"""What a run reports (rank 0): a progress bar with loss, step rate, tokens/s and ETA; JSON-lines records
in RUN/logs/train.jsonl; the same scalars in TensorBoard under RUN/logs/tensorboard."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import torch
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
        self.window = {"loss": 0.0, "settled": 0, "tokens": 0, "seconds": 0.0, "steps": 0}
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

    def settle(self, loss: float, tokens: int, steps: int) -> None:
        """The summed loss and the tokens of the last `steps` steps, read back from the device together."""
        if not self.enabled:
            return
        window = self.window
        window["loss"] += loss
        window["settled"] += steps
        window["tokens"] += tokens
        self.bar.set_postfix(loss=f"{loss / steps:.4f}")

    def step(self, step: int, seconds: float, phases: Counter = None, **values) -> None:
        """After each optimizer step; a record every log.every steps (and at the last) holds window means, with
        ms_PHASE for each of the step's `phases` (seconds, from a StepClock). The loop settles the window's
        losses (`settle`) before it logs them."""
        if not self.enabled:
            return
        window = self.window
        window["seconds"] += seconds
        window["steps"] += 1
        self.phases.update(phases or {})
        self.bar.update(1)
        if step % self.every and step != self.total:
            return
        self.write(
            step,
            loss=window["loss"] / max(window["settled"], 1),
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


class StepProfile:
    """torch.profiler over steps [start, start + steps) of rank 0 (off when start is 0), then logs/profile.txt:
    the GPU's busy share of those steps' wall time and the ops that took the most device and host time. The
    table is made by `write`, once the run has exported: summing ten steps' events took 78 s on the GPU machine
    (session 34), and a run's seconds (run.seconds) went on it."""

    def __init__(self, out: Path, start: int, steps: int, enabled: bool):
        self.path, self.start, self.end = out / "logs" / "profile.txt", start, start + steps
        self.enabled, self.profiler, self.begun = enabled and start > 0 and steps > 0, None, 0.0
        self.recorded = None  # (the stopped profiler, steps, their wall seconds) until `write`

    def before(self, step: int) -> None:
        """Before step `step` (the count of steps done) runs."""
        if self.enabled and step == self.start and self.profiler is None:
            from torch.profiler import ProfilerActivity, profile

            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
            self.profiler = profile(activities=activities)
            self.profiler.__enter__()
            self.begun = time.perf_counter()

    def after(self, step: int) -> None:
        """After the step that brought the count to `step`: at the last profiled one, stops the profiler."""
        if self.profiler is not None and step >= self.end:
            self.stop(step)

    def stop(self, step: int) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        wall = time.perf_counter() - self.begun
        self.profiler.__exit__(None, None, None)  # the events are summed later, when read
        self.recorded = (self.profiler, step - self.start, wall)
        self.profiler, self.enabled = None, False

    def write(self, step: int) -> None:
        """logs/profile.txt from the profiled steps (those done by `step`, for a run that ended inside them)."""
        if self.profiler is not None:
            self.stop(step)
        if self.recorded is None:
            return
        profiler, steps, wall = self.recorded
        self.recorded = None
        if steps <= 0:
            return
        averages = profiler.key_averages()
        kernels = sum(e.self_device_time_total for e in averages if e.device_type.name == "CUDA") / 1e6
        lines = [f"steps {self.start}-{self.start + steps}: {1000 * wall / steps:.1f} ms a step, the GPU busy "
                 f"{1000 * kernels / steps:.1f} ms of it ({kernels / wall:.0%})", ""]
        for key in ("self_device_time_total", "self_cpu_time_total"):
            lines += [f"by {key}:", averages.table(sort_by=key, row_limit=30, max_name_column_width=60), ""]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("\n".join(lines))

