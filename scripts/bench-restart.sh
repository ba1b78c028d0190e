#!/usr/bin/env bash
# Restart time of a store holding GIB GiB of CommitLog per replica: fills a `raftmq dev` group
# (3 replicas, 16 KiB messages) until its first replica's CommitLog holds GIB GiB, kills it with
# kill -9, starts it again on the same data and prints how long it took to print READY (a leader
# elected and serving) and until a send was acknowledged. Run it twice with different GIB to see
# whether the time grows with the log (it should only grow with the unchecked tail).
#
#   scripts/bench-restart.sh [RAFTMQ] [GIB]
set -euo pipefail
BIN=${1:-target/release/raftmq}
GIB=${2:-5}
d=$(mktemp -d)
trap 'kill -9 "${pid:-0}" 2>/dev/null || true; cp "$d/err" /tmp/bench-restart.err 2>/dev/null; rm -rf "$d"' EXIT
start() {
  # Fixed ports: the group's Raft addresses are in its log, and a restart must find them again.
  "$BIN" dev --namesrv-port 29876 --broker-port 20911 --raft-port 21911 --data-dir "$d/data" \
    > "$d/out" 2> "$d/err" &
  pid=$!
  for _ in $(seq 1 6000); do grep -q READY "$d/out" && return 0; sleep 0.01; done
  echo "no READY line: $(grep -m5 -iE "panicked|error" "$d/err")" >&2
  exit 1
}
ns() { sed -n 's/^READY //p' "$d/out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["namesrv"])'; }
start
want=$((GIB * 1024 * 1024 * 1024))
log_bytes() {
  local dir
  dir=$(find "$d/data/node-1" -type d -name commitlog | head -1)
  if [ -z "$dir" ]; then echo 0; else du -s -B1 "$dir" | cut -f1; fi
}
free_bytes() { df --output=avail -B1 "$d" | tail -1; }
while [ "$(log_bytes)" -lt "$want" ]; do
  # Three replicas write the same bytes: stop well before the disk is full.
  if [ "$(free_bytes)" -lt $((8 * 1024 * 1024 * 1024)) ]; then
    echo "stopping the fill: under 8 GiB free" >&2
    break
  fi
  "$BIN" bench produce --namesrv "$(ns)" --producers 64 --message-bytes 16384 --duration-secs 20 \
    > /dev/null 2>&1
done
held=$(log_bytes)
kill -9 "$pid"; wait "$pid" 2>/dev/null || true
: > "$d/out"
t0=$(date +%s%N)
start
t1=$(date +%s%N)
"$BIN" bench produce --namesrv "$(ns)" --producers 1 --message-bytes 1024 --duration-secs 1 \
  > "$d/first" 2>/dev/null
t2=$(date +%s%N)
kill -INT "$pid"; wait "$pid" 2>/dev/null || true
python3 -c "
print({'commitlog_bytes_per_replica': int($held), 'ready_ms': ($t1 - $t0) // 1000000,
       'ready_to_first_send_run_ms': ($t2 - $t1) // 1000000})"
