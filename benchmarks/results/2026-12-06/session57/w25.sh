cd /work/main
bash /tmp/s57/count.sh /tmp/s57/soup56w25.safetensors soup56w25 > /tmp/s57/count-soup56w25.out 2>&1
python3 - <<'PY'
import json
v = json.load(open('data/embedded/heldout/tasks_video.json'))
json.dump([e for e in v if e['task'] in ('t2v', 'ti2v')], open('/tmp/s57/tasks_t2v_ti2v.json', 'w'))
PY
export OMP_NUM_THREADS=1
for k in 0 1; do
  .venv/bin/python -m vino_model.generate --model /tmp/s57/b-soup56w25 --tasks /tmp/s57/tasks_t2v_ti2v.json --out /tmp/s57/v-w25 \
    --reference-mode mode --video-suffix .npz --shard $k/2 --dtype float32 > /tmp/s57/gen-w25-$k.log 2>&1 &
done
wait
