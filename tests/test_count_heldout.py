"""scripts/count_heldout.sh: a bundle's held-out count prompts, drawn alone, counted and paired with a base."""

import os
import subprocess
import sys
from pathlib import Path

from training.bench import prompted_count
from training.manifest import read_manifest
from vino_model.tiny import make_tiny_bundle

ROOT = Path(__file__).parents[1]


def count(tmp_path: Path, out: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PY": sys.executable, "DATA": str(tmp_path / "heldout"), "SIZE": "32", "WORKERS": "1",
           "T2I_PER_TASK": "30", "COUNT13_PER_TASK": "30", **env}
    return subprocess.run(["bash", "scripts/count_heldout.sh", str(make_tiny_bundle(tmp_path / "bundle")),
                           str(tmp_path / out), *args], cwd=ROOT, env=env, timeout=600, capture_output=True, text=True)


def count_prompts(split: Path) -> int:
    return sum(bool(prompted_count(r.meta)) for r in read_manifest(str(split / "manifest.jsonl")))


def test_every_count_prompt_of_both_worlds_is_drawn_counted_and_paired_with_the_base(tmp_path):
    done = count(tmp_path, "old", "--", "--steps", "1")
    assert done.returncode == 0, done.stderr
    for name, world in (("t2i120", "heldout-t2i120"), ("h13", "heldout-count13")):
        prompts = count_prompts(tmp_path / world)
        assert prompts > 0, f"{world} should hold count prompts"
        assert len(list((tmp_path / "old" / name).glob("*_t2i.png"))) == prompts  # those prompts alone
        table = (tmp_path / "old" / f"counts-{name}.md").read_text()
        assert f"/ {prompts} |" in table.splitlines()[-1] and "against the base" not in table

    done = count(tmp_path, "new", "--", "--steps", "2", BASE=str(tmp_path / "old"))
    assert done.returncode == 0, done.stderr
    for name in ("t2i120", "h13"):
        assert "against the base: right where it was wrong" in (tmp_path / "new" / f"counts-{name}.md").read_text()


def test_a_folder_that_is_not_a_bundle_or_options_without_their_dashes_are_refused(tmp_path):
    for args in ([str(tmp_path), str(tmp_path / "out")],
                 [str(make_tiny_bundle(tmp_path / "bundle")), str(tmp_path / "out"), "--steps", "1"]):
        done = subprocess.run(["bash", "scripts/count_heldout.sh", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 2 and "usage: bash scripts/count_heldout.sh BUNDLE OUT [-- generate options]" \
            in done.stderr
        assert not (tmp_path / "out").exists()
