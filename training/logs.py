"""What a run reports (rank 0): a progress bar with loss, step rate, tokens/s and ETA; JSON-lines records
in RUN/logs/train.jsonl; the same scalars in TensorBoard under RUN/logs/tensorboard."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tqdm import tqdm


class Logger:
    def __init__(self, out: Path, cfg, start: int, enabled: bool):
        self.enabled, self.every, self.total = enabled, cfg.log.every, cfg.run.steps
        self.window = {"loss": 0.0, "tokens": 0, "seconds": 0.0, "steps": 0}
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

    def step(self, step: int, loss: float, tokens: int, seconds: float, **values) -> None:
        """After each optimizer step; a record every log.every steps (and at the last) holds window means."""
        if not self.enabled:
            return
        window = self.window
        window["loss"] += loss
        window["tokens"] += tokens
        window["seconds"] += seconds
        window["steps"] += 1
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tokens / max(seconds, 1e-9):.0f}")
        if step % self.every and step != self.total:
            return
        self.write(
            step,
            loss=window["loss"] / window["steps"],
            tokens_per_s=window["tokens"] / max(window["seconds"], 1e-9),
            steps_per_s=window["steps"] / max(window["seconds"], 1e-9),
            **values,
        )
        self.window = dict.fromkeys(window, 0)

    def message(self, text: str) -> None:
        if self.enabled:
            self.bar.write(text)

    def close(self) -> None:
        if self.enabled:
            self.bar.close()
            self.jsonl.close()
            if self.tensorboard is not None:
                self.tensorboard.close()
