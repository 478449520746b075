"""scripts/device_chunk.sh: each call of the lent GPU is a whole stage-3 run that goes on from the last call's trunk."""

import os
import subprocess
import tarfile
from pathlib import Path

ROOT = Path(__file__).parents[1]
E = Path("runs/embedded/stage3")

# stands in for scripts/train_embedded.sh: writes what a stage-3 run leaves and what it was given
FAKE_TRAIN = """
set -e
mkdir -p runs/embedded/stage3/export runs/embedded/stage3/logs
echo "$INIT|$STAGE3_ARGS|$BUNDLE|$START_AT|$(( STAGE_UNTIL - $(date +%s) ))" > runs/embedded/stage3/logs/train.jsonl
head -c "$TRUNK_BYTES" /dev/urandom > runs/embedded/stage3/export/trunk.safetensors
head -c "$EMA_BYTES" /dev/urandom > runs/embedded/stage3/export/vino-ema.safetensors
exit "${FAKE_STATUS:-0}"
"""


def call(repo: Path, name: str, chunk: int, trunk_mib: int = 1, ema_mib: int = 1, status: int = 0):
    out = repo / name
    out.mkdir()
    (repo / "fake_train.sh").write_text(FAKE_TRAIN)
    env = {"PATH": os.environ["PATH"], "OUT": str(out), "SEED": "36", "CHUNK": str(chunk), "PY": "python3",
           "TRAIN": "bash fake_train.sh", "TRUNK_BYTES": str(trunk_mib << 20), "EMA_BYTES": str(ema_mib << 20),
           "FAKE_STATUS": str(status)}
    done = subprocess.run(["bash", str(ROOT / "scripts" / "device_chunk.sh")], cwd=repo, env=env, timeout=60,
                          capture_output=True, text=True)
    return done, out


def given(out: Path) -> list[str]:
    with tarfile.open(out / "logs.tgz") as tar:
        return tar.extractfile("runs/embedded/stage3/logs/train.jsonl").read().decode().strip().split("|")


def test_a_bare_machine_starts_from_the_committed_trunk_uncompiled_and_brings_back_both_exports(tmp_path):
    done, out = call(tmp_path, "first", 1)
    assert done.returncode == 0, done.stderr
    init, args, bundle, start_at, seconds = given(out)
    assert init == "training/embedded-src/stage3" and bundle == "" and start_at == "3"
    assert "run.seed=3601" in args and "model.compile=false" in args and "optim.ema=0.995" in args
    assert 525 <= int(seconds) <= 540
    for name in ("trunk.safetensors", "vino-ema.safetensors"):
        assert (out / name).read_bytes() == (tmp_path / E / "export" / name).read_bytes()
    assert "chunk 1 of world 36" in (out / "call.log").read_text()


def test_a_warm_machine_goes_on_from_the_carried_trunk_compiled_in_a_fresh_run_folder(tmp_path):
    call(tmp_path, "first", 1)
    (tmp_path / E / "stale").write_text("the last call's run")
    (tmp_path / "runs" / "carry").mkdir()
    (tmp_path / "runs" / "carry" / "trunk.safetensors").write_bytes(b"trunk")
    done, out = call(tmp_path, "second", 2)
    assert done.returncode == 0, done.stderr
    init, args, *_ = given(out)
    assert init == "runs/carry/trunk.safetensors"
    assert "run.seed=3602" in args and "model.compile=true" in args
    assert not (tmp_path / E / "stale").exists()


def test_big_exports_come_in_parts_and_what_does_not_fit_stays_behind_named(tmp_path):
    done, out = call(tmp_path, "big", 1, trunk_mib=29, ema_mib=40, status=7)
    assert done.returncode == 7  # the run's own status, after packing what there is
    parts = sorted(out.glob("trunk.safetensors.part-*"))
    assert [p.name for p in parts] == ["trunk.safetensors.part-aa", "trunk.safetensors.part-ab"]
    assert all(p.stat().st_size <= 16 << 20 for p in parts)
    assert b"".join(p.read_bytes() for p in parts) == (tmp_path / E / "export" / "trunk.safetensors").read_bytes()
    assert not list(out.glob("vino-ema*"))  # 29 + 40 MiB is over the 64 MiB that comes back
    assert "no room left for runs/embedded/stage3/export/vino-ema.safetensors" in (out / "call.log").read_text()
