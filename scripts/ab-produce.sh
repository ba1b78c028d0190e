#!/usr/bin/env bash
# A/B produce benchmark on a noisy machine: alternates `raftmq dev` of two builds, each run
# driven by the same bench client (NEW's), 256 sync senders of 1 KiB, and prints one line per
# run with msgs/s and the broker process's CPU time.
#
#   scripts/ab-produce.sh OLD_RAFTMQ NEW_RAFTMQ [ROUNDS] [SECONDS]
#
# BENCH_ARGS adds arguments to the bench client, e.g. BENCH_ARGS=--transactional (half + commit;
# the line then also gives the transactions that reached their topic per second).
#
# Build the old binary from another worktree, e.g.
#   git worktree add /tmp/ab-old <commit> && (cd /tmp/ab-old && \
#     CARGO_TARGET_DIR=/tmp/ab-old-target cargo build --release --bin raftmq)
set -euo pipefail
OLD=${1:?old raftmq binary}
NEW=${2:?new raftmq binary}
ROUNDS=${3:-4}
SECS=${4:-12}
for r in $(seq 1 "$ROUNDS"); do
  for which in old new; do
    bin=$OLD
    [ "$which" = new ] && bin=$NEW
    d=$(mktemp -d)
    "$bin" dev --namesrv-port 0 --broker-port 0 --data-dir "$d/data" > "$d/out" 2> "$d/err" &
    pid=$!
    for _ in $(seq 1 600); do grep -q READY "$d/out" && break; sleep 0.1; done
    ns=$(sed -n 's/^READY //p' "$d/out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["namesrv"])')
    cpu0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    summary=$("$NEW" bench produce --namesrv "$ns" --producers 256 --message-bytes 1024 \
      --duration-secs "$SECS" ${BENCH_ARGS:-} 2>/dev/null | tail -1)
    cpu1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    kill -INT "$pid"
    wait "$pid" || true
    ticks=$(getconf CLK_TCK)
    echo "$summary" | python3 -c "
import json, sys
s = json.load(sys.stdin)
cpu_us = ($cpu1 - $cpu0) * 1e6 / $ticks
tx = f', {s[\"tx_per_sec\"]:.0f} tx/s visible' if 'tx_per_sec' in s else ''
print(f'round $r $which: {s[\"msgs_per_sec\"]:.0f} msgs/s{tx}, p99 {s[\"p99_us\"] / 1000:.1f} ms, '
      f'broker CPU {cpu_us / max(s[\"messages\"], 1):.1f} us/msg')"
    rm -rf "$d"
  done
done
