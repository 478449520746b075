"""benchmarks/scaling_table.py: speed-ups and efficiencies from the files benchmarks/scaling.sh leaves."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from scaling_table import table  # noqa: E402


def test_the_table_gives_speed_up_efficiency_and_per_gpu_throughput(tmp_path):
    for n, seconds, error in ((1, 3.2, None), (2, 1.7, 0.0), (4, 0.9, 1e-3)):
        run = {"gpus": n, "seconds": seconds, "peak_gib": 40.0, **({} if error is None else {"rel_error_vs_one_gpu": error})}
        (tmp_path / f"sp-{n}.json").write_text(json.dumps(run))
    for n, rates in ((1, [1.0, 900.0, 1100.0, 1000.0]), (4, [5.0, 3900.0, 4100.0, 4000.0]), (8, [])):
        (tmp_path / f"train-{n}.jsonl").write_text("".join(json.dumps({"step": 2 * i + 2, "tokens_per_s": r}) + "\n"
                                                           for i, r in enumerate(rates)))
    lines = table(tmp_path).splitlines()
    assert "| 4 | 0.900 | 3.56x | 89% | 3.70x | 1.0e-03 | 40.0 |" in lines
    assert "| 1 | 3.200 | 1.00x | 100% | 1.00x | - | 40.0 |" in lines
    # training: the mean of the last two windows after the first; per GPU against the fewest GPUs
    assert "| 1 | 1,050 | 1,050 | 100% |" in lines
    assert "| 4 | 4,050 | 1,012 | 96% |" in lines
    assert "| 8 | no step logged | | |" in lines


def test_an_empty_folder_says_so(tmp_path):
    assert table(tmp_path) == f"no sp-N.json or train-N.jsonl in {tmp_path}\n"
