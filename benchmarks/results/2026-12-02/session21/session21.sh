# Session 21 on the lent H200 (untracked; copied into the results): the compile A/B on cores 0-1 while the worlds
# render on cores 2-15, then stage 3 from the committed seed with compiled blocks if they won, its decay fitted to
# the machine's seconds (run.fit_decay).
set -uo pipefail
export SIZE=128 SRC=models/embedded-src
SEED=20
taskset -c 0,1 "$PY" benchmarks/training_step.py --variants "" "model.compile=true" --warmup 20 --steps 30 \
  --batch 512 > output/compile-ab.txt 2>&1 &
ab=$!
echo "=== $(date +%T) worlds on 14 cores beside the A/B"
WORKERS=14 taskset -c 2-15 bash -c "source scripts/embedded_inputs.sh
  world data/embedded/base --per-task 12000 --tasks t2i,t2v --seed $((2 * SEED)) &
  world data/embedded/tasks --per-task 3000 --seed $((2 * SEED + 1)) &
  wait"
wait $ab
echo "=== $(date +%T) A/B done"; cat output/compile-ab.txt
compile=false
ratios=$(awk '/ ms / {print $NF}' output/compile-ab.txt | tr -d x)
[ "$(echo "$ratios" | wc -w)" = 2 ] && awk -v r="$ratios" 'BEGIN {split(r, a); exit !(a[1] >= 1.05 && a[2] >= 1.05)}' &&
  compile=true
echo "=== compile=$compile"
run() {
  STAGE3_ARGS="run.steps=4000 run.fit_decay=true model.compile=$1" STAGE_UNTIL=$(cat /tmp/until) START_AT=3 \
    INIT=training/embedded-src/stage3 BASE_PER_TASK=12000 TASK_PER_TASK=3000 SEED=$SEED SHARDS=12 \
    bash scripts/train_embedded.sh
}
run $compile && exit 0
status=$?
[ "$compile" = true ] && [ "$status" != 75 ] || exit $status
echo "=== $(date +%T) the compiled run failed ($status): on without compiling, from its last checkpoint"
run false
