"""scripts/device_chunk.sh: each call of the lent GPU is a whole stage-3 run that goes on from the last call's trunk."""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import torch

from vino_model.checkpoint import read_state_dict, save_vino
from vino_model.config import preset
from vino_model.tiny import random_vino_state

ROOT = Path(__file__).parents[1]
E = Path("runs/embedded/stage3")

# stands in for scripts/train_embedded.sh: writes what a stage-3 run leaves and what it was given
FAKE_TRAIN = """
set -e
mkdir -p runs/embedded/stage3/export runs/embedded/stage3/logs
echo "$INIT|$STAGE3_ARGS|$BUNDLE|$START_AT|$(( STAGE_UNTIL - $(date +%s) ))|$SEED" \
  > runs/embedded/stage3/logs/train.jsonl
head -c "$TRUNK_BYTES" /dev/urandom > runs/embedded/stage3/export/trunk.safetensors
head -c "$EMA_BYTES" /dev/urandom > runs/embedded/stage3/export/vino-ema.safetensors
exit "${FAKE_STATUS:-0}"
"""


# stands in for scripts/device_score.sh: one scores file a set, naming the export it was given; sleeps SCORE_SLEEP
FAKE_SCORE = """
export_path=$1 && shift
for set in "$@"; do echo "{\\"export\\": \\"$export_path\\"}" > "$OUT/scores-$set.json"; done
echo "== video" > "$OUT/tables.txt"
sleep "${SCORE_SLEEP:-0}"
echo "scored" > "$OUT/score.log"
"""


def call(repo: Path, name: str, chunk: int, trunk_mib: int = 1, ema_mib: int = 1, status: int = 0,
         compile_blocks: bool = False, **extra: str):
    out = repo / name
    out.mkdir()
    (repo / "fake_train.sh").write_text(FAKE_TRAIN)
    (repo / "fake_score.sh").write_text(FAKE_SCORE)
    env = {"PATH": os.environ["PATH"], "OUT": str(out), "SEED": "36", "CHUNK": str(chunk), "PY": "python3",
           "TRAIN": "bash fake_train.sh", "TRUNK_BYTES": str(trunk_mib << 20), "EMA_BYTES": str(ema_mib << 20),
           "FAKE_STATUS": str(status), "COMPILE": str(int(compile_blocks)), "SCORER": "bash fake_score.sh", **extra}
    done = subprocess.run(["bash", str(ROOT / "scripts" / "device_chunk.sh")], cwd=repo, env=env, timeout=60,
                          capture_output=True, text=True)
    return done, out


def given(out: Path) -> list[str]:
    with tarfile.open(out / "logs.tgz") as tar:
        return tar.extractfile("runs/embedded/stage3/logs/train.jsonl").read().decode().strip().split("|")


def test_a_bare_machine_starts_from_the_committed_trunk_uncompiled_and_brings_back_both_exports(tmp_path):
    done, out = call(tmp_path, "first", 1)
    assert done.returncode == 0, done.stderr
    init, args, bundle, start_at, seconds, world = given(out)
    assert init == "training/embedded-src/stage3" and bundle == "" and start_at == "3" and world == "3601"
    assert "run.seed=3601" in args and "model.compile=false" in args and "optim.ema=0.995" in args
    assert 525 <= int(seconds) <= 540
    for name in ("trunk.safetensors", "vino-ema.safetensors"):
        assert (out / name).read_bytes() == (tmp_path / E / "export" / name).read_bytes()
    assert "chunk 1 of session 36 (world 3601)" in (out / "call.log").read_text()


def test_a_warm_machine_starts_a_fresh_run_on_its_world_from_the_working_trees_seed_compiled_when_asked(tmp_path):
    _, first = call(tmp_path, "first", 1)
    (tmp_path / E / "stale").write_text("the last call's run")
    done, out = call(tmp_path, "second", 2, compile_blocks=True)
    assert done.returncode == 0, done.stderr
    init, args, *_, world = given(out)
    assert init == "training/embedded-src/stage3"  # where take_chunk.sh put the last call's trunk
    assert world == "3601" and "run.seed=3602" in args and "model.compile=true" in args  # the world made there
    assert not (tmp_path / E / "stale").exists()
    kept = [(tmp_path / "runs" / "chunks" / str(n) / "vino-ema.safetensors").read_bytes() for n in (1, 2)]
    assert kept == [(o / "vino-ema.safetensors").read_bytes() for o in (first, out)]  # both calls' exports, to average
    assert kept[0] != kept[1]
    (tmp_path / "data" / "embedded" / "world").unlink()  # a bare machine
    done, out = call(tmp_path, "third", 3)
    assert given(out)[-1] == "3603"  # a world of its own


def test_big_exports_come_in_parts_and_what_does_not_fit_stays_behind_named(tmp_path):
    done, out = call(tmp_path, "big", 1, trunk_mib=29, ema_mib=40, status=7)
    assert done.returncode == 7  # the run's own status, after packing what there is
    parts = sorted(out.glob("trunk.safetensors.part-*"))
    assert [p.name for p in parts] == ["trunk.safetensors.part-aa", "trunk.safetensors.part-ab"]
    assert all(p.stat().st_size <= 16 << 20 for p in parts)
    assert b"".join(p.read_bytes() for p in parts) == (tmp_path / E / "export" / "trunk.safetensors").read_bytes()
    assert not list(out.glob("vino-ema*"))  # 29 + 40 MiB is over the 64 MiB that comes back
    assert "no room left for runs/embedded/stage3/export/vino-ema.safetensors" in (out / "call.log").read_text()


def packed(out: Path) -> dict[str, str]:
    with tarfile.open(out / "scores.tgz") as tar:
        return {Path(m.name).name: tar.extractfile(m).read().decode() for m in tar.getmembers() if m.isfile()}


def test_a_call_asked_to_score_brings_its_exports_scores_back_in_one_file_beside_both_exports(tmp_path):
    # 31 MiB each, as a grown model's float32 exports: in parts of 15 MiB they took three files each (session 66)
    done, out = call(tmp_path, "scored", 1, trunk_mib=31, ema_mib=31, SCORE="video image")
    assert done.returncode == 0, done.stderr
    scores = packed(out)
    assert json.loads(scores["scores-video.json"]) == {"export": "runs/chunks/1/vino-ema.safetensors"}
    assert "scores-image.json" in scores and scores["score.log"] == "scored\n"
    assert len(list(out.iterdir())) == 7  # call.log, logs.tgz, two parts of each export, scores.tgz: under 8
    whole = b"".join(p.read_bytes() for p in sorted(out.glob("vino-ema.safetensors.part-*")))
    assert whole == (tmp_path / E / "export" / "vino-ema.safetensors").read_bytes()


def test_a_slow_score_is_stopped_at_score_end_and_costs_only_its_own_results(tmp_path):
    done, out = call(tmp_path, "slow", 1, SCORE="video", SCORE_END="12", SCORE_SLEEP="60")
    assert done.returncode == 0, done.stderr
    log = (out / "call.log").read_text()
    assert "the scoring was stopped at 12 s" in log and "ended with status 124" in log
    assert "score.log" not in packed(out)  # the scorer never got there
    assert (out / "trunk.safetensors").is_file() and (out / "vino-ema.safetensors").is_file()
    done, out = call(tmp_path, "late", 2, SCORE="video", SCORE_END="0")
    assert done.returncode == 0 and "no time left to score" in (out / "call.log").read_text()
    assert not (out / "scores.tgz").exists() and (out / "trunk.safetensors").is_file()


def test_an_unknown_set_to_score_is_refused_before_the_run(tmp_path):
    done, out = call(tmp_path, "typo", 1, SCORE="video imgae")
    assert done.returncode == 2
    assert "SCORE: unknown set 'imgae'" in done.stderr
    assert not (tmp_path / E).exists() and not list(out.iterdir())


def take(repo: Path, came_back: Path) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ["PATH"], "PY": sys.executable, "PYTHONPATH": str(ROOT)}
    return subprocess.run(["bash", str(ROOT / "scripts" / "take_chunk.sh"), str(came_back), "runs/s/c1"], cwd=repo,
                          env=env, timeout=120, capture_output=True, text=True)


def test_take_chunk_puts_the_returned_trunk_in_the_seeds_place_and_joins_the_ema_export(tmp_path):
    state = random_vino_state(preset("tiny"), seed=1)
    save_vino(tmp_path / "trunk.safetensors", state, preset("tiny"))
    came_back = tmp_path / "device"
    came_back.mkdir()
    parts = str(came_back / "trunk.safetensors.part-")
    subprocess.run(["split", "-n", "2", str(tmp_path / "trunk.safetensors"), parts], check=True)
    (came_back / "vino-ema.safetensors").write_bytes(b"the ema export")
    (came_back / "call.log").write_text("=== chunk 1")
    (tmp_path / "scored").mkdir()
    (tmp_path / "scored" / "scores-video.json").write_text("[]")
    subprocess.run(["tar", "czf", str(came_back / "scores.tgz"), "-C", str(tmp_path / "scored"), "."], check=True)
    seed = tmp_path / "training" / "embedded-src" / "stage3"
    seed.mkdir(parents=True)
    (seed / "model-00002-of-00002.safetensors").write_bytes(b"the committed seed's second shard")
    done = take(tmp_path, came_back)
    assert done.returncode == 0, done.stderr
    loaded, config = read_state_dict(seed)
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)
    assert config["mmdit"] == json.loads(preset("tiny").to_json())["mmdit"]
    assert not (seed / "model-00002-of-00002.safetensors").exists()  # the old seed's shards all go
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in seed.iterdir())
    dest = tmp_path / "runs" / "s" / "c1"
    assert (dest / "vino-ema.safetensors").read_bytes() == b"the ema export"
    assert (dest / "trunk.safetensors").read_bytes() == (tmp_path / "trunk.safetensors").read_bytes()
    assert (dest / "call.log").read_text() == "=== chunk 1"
    assert (dest / "scores" / "scores-video.json").read_text() == "[]"


def test_take_chunk_without_a_trunk_names_it_and_leaves_the_seed_alone(tmp_path):
    came_back = tmp_path / "device"
    came_back.mkdir()
    (came_back / "call.log").write_text("the run failed")
    seed = tmp_path / "training" / "embedded-src" / "stage3"
    seed.mkdir(parents=True)
    (seed / "model.safetensors").write_bytes(b"seed")
    done = take(tmp_path, came_back)
    assert done.returncode != 0
    assert f"{came_back} has no trunk.safetensors" in done.stderr
    assert (seed / "model.safetensors").read_bytes() == b"seed"
