cd /work/main
bash /tmp/s57/count.sh /tmp/s57/texttail/run/export/vino.safetensors texttail > /tmp/s57/count-texttail.out 2>&1
export OMP_NUM_THREADS=1
for k in 0 1; do
  .venv/bin/python -m vino_model.generate --model /tmp/s57/b-texttail --tasks /tmp/s57/tasks_t2v.json --out /tmp/s57/v-text \
    --reference-mode mode --video-suffix .npz --shard $k/2 --dtype float32 > /tmp/s57/gen-text-$k.log 2>&1 &
done
wait
.venv/bin/python -m training.bench --tasks /tmp/s57/tasks_t2v.json --manifest data/embedded/heldout/manifest.jsonl \
  --results /tmp/s57/v-text --json /tmp/s57/scores-t2v-text.json > /dev/null
.venv/bin/python benchmarks/paired_scores.py benchmarks/results/2026-12-06/session56/gpu/scores-video.json /tmp/s57/scores-t2v-text.json > /tmp/s57/paired-t2v-text.md
