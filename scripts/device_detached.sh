#!/usr/bin/env bash
# For the lent GPU machine, whose calls are at most 10 minutes and whose machine goes back 30 s after a call:
# the first call starts COMMAND in its own process session (it lives on between calls while the machine is
# held); every call, the first too, then waits up to SECONDS for it and copies what it has written so far
# to $OUT. Identical calls can then follow each other back to back with no set-up in between. A command that
# was killed before it ended (with its call, say) starts again: it should pick up where it was.
#
#   bash scripts/device_detached.sh SECONDS 'COMMAND'
#
# Back each call (the device returns at most 8 files): detached.log (the command's output so far), logs.tgz
# (detached.rc once the command has ended, detached.mem with the host's and the GPU's memory in use every 30 s,
# every run's logs/train.jsonl and logs/profile.txt, runs/*/results/, models/embedded-src/*.log and
# output/embedded-bench*/'s tables), and FETCH="path ..." split in 14 MB parts (PATH.part-aa, -ab, ..., with
# each / in PATH written __: `cat` them back together).
set -uo pipefail
seconds=$1 command=$2
state=${DETACHED_STATE:-/tmp/vino-detached}  # the command's pid, output and exit status live here
mkdir -p "$state"
running() { [ -f "$state/pid" ] && kill -0 "$(cat "$state/pid")" 2>/dev/null; }
if [ ! -f "$state/rc" ] && ! running; then  # not started yet, or killed with an earlier call: (re)start it
  [ ! -f "$state/pid" ] || echo "=== $(date +%T) the command was gone with no exit status: starting it again" >> "$state/detached.log"
  setsid bash -c "( $command ); echo \$? > $state/rc" >> "$state/detached.log" 2>&1 < /dev/null &
  echo $! > "$state/pid"
  setsid bash -c "while kill -0 $(cat "$state/pid") 2>/dev/null; do
    echo \"\$(date +%T) host \$(free -g | awk 'NR == 2 {print \$3 \" of \" \$2}') GiB, GPU \$(nvidia-smi \
      --query-gpu=memory.used,memory.total,utilization.gpu --format=csv,noheader 2>/dev/null)\"; sleep 30
  done" >> "$state/detached.mem" 2>&1 < /dev/null &
fi
end=$(( $(date +%s) + seconds ))
while [ "$(date +%s)" -lt "$end" ] && [ ! -f "$state/rc" ] && running; do sleep 1; done

out=${OUT:?OUT names the folder that comes back}
cp "$state/detached.log" "$out/"
[ ! -f "$state/rc" ] || cp "$state/rc" "$state/detached.rc"
shopt -s nullglob
tar czf "$out/logs.tgz" "$state"/detached.* runs/*/*/logs/train.jsonl runs/*/*/logs/profile.txt runs/*/results \
  models/embedded-src/*.log* output/embedded-bench*/*.txt output/embedded-bench*/*.json 2>/dev/null
for file in ${FETCH:-}; do
  [ -f "$file" ] && split -b 14M "$file" "$out/${file//\//__}.part-"  # a/b/c -> a__b__c: no two files clash
done
true
