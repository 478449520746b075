"""scripts/device_detached.sh: the lent GPU machine's calls start a long command once and then only poll it."""

import os
import signal
import subprocess
import tarfile
from pathlib import Path

ROOT = Path(__file__).parents[1]


def poll(tmp_path: Path, name: str, seconds: int, command: str, fetch: str = "") -> Path:
    out = tmp_path / name
    out.mkdir()
    env = {"PATH": "/usr/bin:/bin", "OUT": str(out), "DETACHED_STATE": str(tmp_path / "state"), "FETCH": fetch}
    subprocess.run(["bash", str(ROOT / "scripts" / "device_detached.sh"), str(seconds), command], cwd=tmp_path,
                   env=env, check=True, timeout=60)
    return out


def members(out: Path) -> dict:
    with tarfile.open(out / "logs.tgz") as tar:
        return {Path(m.name).name: tar.extractfile(m).read().decode() for m in tar.getmembers() if m.isfile()}


def test_the_command_starts_once_and_every_call_brings_back_what_it_wrote(tmp_path):
    (tmp_path / "runs" / "embedded" / "stage0" / "logs").mkdir(parents=True)
    command = "echo started >> starts; echo '{\"step\": 1}' > runs/embedded/stage0/logs/train.jsonl; sleep 6; exit 3"
    first = poll(tmp_path, "first", 1, command)
    assert (first / "detached.log").is_file() and "detached.rc" not in members(first)  # still running
    assert members(first)["train.jsonl"] == '{"step": 1}\n'
    (tmp_path / "big").write_bytes(b"x" * (15 << 20))
    for stage in (1, 2):  # two files of one name
        (tmp_path / f"s{stage}").mkdir()
        (tmp_path / f"s{stage}" / "vino.safetensors").write_text(f"stage {stage}")
    fetch = "big missing s*/vino.safetensors"
    second = poll(tmp_path, "second", 20, command, fetch=fetch)  # waits for the end; starts nothing
    assert members(second)["detached.rc"].strip() == "3"
    assert (tmp_path / "starts").read_text() == "started\n"
    parts = sorted(second.glob("big.part-*"))
    assert [p.name for p in parts] == ["big.part-aa", "big.part-ab"]
    assert b"".join(p.read_bytes() for p in parts) == (tmp_path / "big").read_bytes()
    assert [(second / f"s{stage}__vino.safetensors.part-aa").read_text() for stage in (1, 2)] == ["stage 1", "stage 2"]


def test_a_command_killed_before_it_ended_starts_again(tmp_path):
    command = "echo started >> starts; sleep 30"
    poll(tmp_path, "first", 1, command)
    pid = int((tmp_path / "state" / "pid").read_text())
    os.killpg(pid, signal.SIGTERM)  # what the machine does to a call's processes, at worst (setsid: pid = group)
    subprocess.run(["bash", "-c", f"while kill -0 {pid} 2>/dev/null; do sleep 0.1; done"], timeout=10, check=True)
    second = poll(tmp_path, "second", 1, command)
    assert (tmp_path / "starts").read_text() == "started\nstarted\n"
    assert "starting it again" in (second / "detached.log").read_text()
    os.killpg(int((tmp_path / "state" / "pid").read_text()), signal.SIGTERM)
