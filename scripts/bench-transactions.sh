#!/usr/bin/env bash
# Transactions against plain sends through `raftmq dev`, alternating on one binary: each round
# runs 256 senders of 1 KiB plain, then as transactions (half message + oneway commit), and
# prints the bench's JSON line and the dev process's CPU ticks over the run.
#
#   scripts/bench-transactions.sh RAFTMQ [ROUNDS] [SECONDS]
set -euo pipefail
BIN=${1:?raftmq binary}; ROUNDS=${2:-3}; SECS=${3:-15}
for r in $(seq 1 $ROUNDS); do
 for mode in plain tx; do
  d=$(mktemp -d)
  $BIN dev --namesrv-port 0 --broker-port 0 --data-dir "$d/data" > "$d/out" 2> "$d/err" & pid=$!
  for _ in $(seq 1 600); do grep -q READY "$d/out" && break; sleep 0.1; done
  ns=$(sed -n 's/^READY //p' "$d/out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["namesrv"])')
  flag=""; [ $mode = tx ] && flag=--transactional
  cpu0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  out=$($BIN bench produce --namesrv $ns --producers 256 --message-bytes 1024 --duration-secs $SECS $flag 2>/dev/null | tail -1)
  cpu1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  echo "round $r $mode: $out cpu_ticks=$((cpu1-cpu0))"
  kill -INT $pid; wait $pid || true; rm -rf $d
 done
done
