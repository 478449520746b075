# score the video outputs made so far: the task file cut to the prompts with an output
cd /work/main
python3 - <<'PY'
import json, os
v = json.load(open('data/embedded/heldout/tasks_video.json'))
d = '/tmp/s57/score-soup56/video'
have = set(os.listdir(d))
kinds = {}
for e in v: kinds.setdefault(e['task'], []).append(e)
# whole kinds only
keep = [e for t, es in kinds.items() if all(f"{x['index']}_{x['task']}.npz" in have for x in es) for e in es]
json.dump(keep, open('/tmp/s57/tasks_video_done.json', 'w'))
print(len(keep), sorted({e['task'] for e in keep}))
PY
.venv/bin/python -m training.bench --tasks /tmp/s57/tasks_video_done.json --manifest data/embedded/heldout/manifest.jsonl --results /tmp/s57/score-soup56/video --json /tmp/s57/scores-video-partial.json > /tmp/s57/partial-table.txt
.venv/bin/python benchmarks/paired_scores.py benchmarks/results/2026-12-06/session56/gpu/scores-video.json /tmp/s57/scores-video-partial.json
