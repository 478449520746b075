#!/usr/bin/env bash
# A bundle's demo on this machine's CPU against issue 4's limits: one image task within 60 s, one 17-frame video
# within 180 s. Generates the bundle's demo tasks (one held-out prompt of each task kind) one after another in one
# process on all cores, at the bundle's defaults, and prints each one's seconds, its limit and the share of it used.
#   bash scripts/cpu_limits.sh BUNDLE OUT [vino_model.generate options, e.g. --steps 30]
# A machine's speed drifts by a third from day to day (session 64): time a candidate beside the committed bundle.
set -euo pipefail
source scripts/embedded_inputs.sh
need_bundle "bash scripts/cpu_limits.sh BUNDLE OUT [generate options]" 2 "$@" || exit 2
PY=${PY:-.venv/bin/python}
bundle=$1 out=$2
shift 2
mkdir -p "$out"
for file in tasks_image tasks_video; do
  "$PY" -m vino_model.generate --model "$bundle" --tasks "$bundle/demo/$file.json" --out "$out" --device cpu \
    --video-suffix .npz "$@" 2>&1 | tee -a "$out/generate.log" | grep -v "^Loading weights" >&2
done
"$PY" - "$out/generate.log" <<'TABLE'
import re
import sys

from vino_model.tasks import TASKS

rows = [(m[1], m[2], float(m[3])) for m in re.finditer(r"^(\d+) (\w+): \S+ \(([\d.]+) s\)$",
                                                          open(sys.argv[1]).read(), re.M)]
print("| entry | task | seconds | limit | share of the limit |\n|---|---|---|---|---|")
for index, task, seconds in rows:
    limit = 60 if TASKS[task].output == "image" else 180
    print(f"| {index} | {task} | {seconds:.1f} | {limit} | {seconds / limit:.2f}{' OVER' if seconds > limit else ''} |")
TABLE
