#!/usr/bin/env bash
# Score a bundle on a split of the procedural world: generate every entry of its task files,
# measure the pixels (training.bench), and score the split's ground-truth renders for the gap.
#   bash scripts/bench_embedded.sh DATA_DIR OUT_DIR [vino_model.generate options...]
#   MODEL=vino_model/embedded (default) PY=.venv/bin/python VIDEO_FORMAT=mp4 (npz: no PyAV needed)
#   SETS="image video" (default): the task files DATA_DIR/tasks_SET.json to run; GROUND_TRUTH=0: leave the
#   ground-truth renders unscored
#   SHARDS=N: N generating processes a task file side by side (a GPU that one small model leaves idle; default 1),
#   each with its share of the cores for torch's threads (OMP_NUM_THREADS, unless set): on a 2-core CPU two shards
#   of two threads each made ti2i_ref 1.5x slower than one process, and two of one thread t2v 1.27x faster
set -euo pipefail
PY=${PY:-.venv/bin/python}
MODEL=${MODEL:-vino_model/embedded}
SHARDS=${SHARDS:-1}
threads=$(( $(nproc) / SHARDS ))
threads=${OMP_NUM_THREADS:-$(( threads > 0 ? threads : 1 ))}
data=$1 out=$2
shift 2
read -ra sets <<< "${SETS:-image video}"
tasks=()
for set in "${sets[@]}"; do tasks+=("$data/tasks_$set.json"); done
for task_file in "${tasks[@]}"; do
  pids=()
  for shard in $(seq 0 $((SHARDS - 1))); do
    OMP_NUM_THREADS=$threads "$PY" -m vino_model.generate --model "$MODEL" --tasks "$task_file" \
      --out "$out" --reference-mode mode --video-suffix ".${VIDEO_FORMAT:-mp4}" --shard "$shard/$SHARDS" "$@" \
      > /dev/null &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid"; done  # set -e: a failed shard fails the benchmark
done
"$PY" -m training.bench --tasks "${tasks[@]}" --results "$out" --json "$out/scores.json" | tee "$out/table.txt"
[ "${GROUND_TRUTH:-1}" = 0 ] && exit 0
echo "ground truth:"
"$PY" -m training.bench --tasks "${tasks[@]}" --ground-truth --json "$out/ground_truth.json" \
  | tee "$out/ground_truth.txt"
