#!/usr/bin/env bash
# Throughput as the store grows (issue 14, item 7): RUNS produce runs of SECS seconds in a row
# against ONE `raftmq dev` group (256 sync senders, 1 KiB, 3 replicas, SYNC_FLUSH), one line per
# run with msgs/s, the broker process's CPU per message, its RSS, and the CommitLog bytes
# replica 1 holds after the run; last, the last run's rate against the first's. Each line also
# carries the machine's memory view over the run: pages the kernel scanned to reclaim page cache
# directly in allocating tasks (`pgscan_direct`, the cost charged to whoever allocates) and in
# kswapd, and free memory at the run's end. PERF_RUNS="1 4" records `perf record -g` of the
# broker process during those runs into PERF_DIR (default /tmp/growth-perf), for
# `perf report -i PERF_DIR/run4.data`.
#
#   scripts/bench-growth.sh [RAFTMQ] [RUNS] [SECS]
set -euo pipefail
BIN=${1:-target/release/raftmq}
RUNS=${2:-10}
SECS=${3:-20}
d=$(mktemp -d)
trap 'kill -9 "${pid:-0}" 2>/dev/null || true; rm -rf "$d"' EXIT
"$BIN" dev --namesrv-port 0 --broker-port 0 --data-dir "$d/data" > "$d/out" 2> "$d/err" &
pid=$!
for _ in $(seq 1 600); do grep -q READY "$d/out" && break; sleep 0.1; done
ns=$(sed -n 's/^READY //p' "$d/out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["namesrv"])')
ticks=$(getconf CLK_TCK)
perf_dir=${PERF_DIR:-/tmp/growth-perf}
vm() { awk -v k="$1" '$1 == k {print $2}' /proc/vmstat; }
rates=()
for r in $(seq 1 "$RUNS"); do
  cpu0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  direct0=$(vm pgscan_direct); kswapd0=$(vm pgscan_kswapd)
  perf_pid=
  if [[ " ${PERF_RUNS:-} " == *" $r "* ]]; then
    mkdir -p "$perf_dir"
    perf record -q -g -p "$pid" -o "$perf_dir/run$r.data" -- sleep "$SECS" 2>/dev/null &
    perf_pid=$!
  fi
  summary=$("$BIN" bench produce --namesrv "$ns" --producers 256 --message-bytes 1024 \
    --duration-secs "$SECS" 2>/dev/null | tail -1)
  [ -n "$perf_pid" ] && wait "$perf_pid"
  cpu1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  direct=$(( $(vm pgscan_direct) - direct0 )); kswapd=$(( $(vm pgscan_kswapd) - kswapd0 ))
  free_mib=$(awk '/MemFree/ {print int($2 / 1024)}' /proc/meminfo)
  rss_kib=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
  log=$(du -s -B1 "$d/data/node-1" | cut -f1)
  rate=$(echo "$summary" | python3 -c "
import json, sys
s = json.load(sys.stdin)
cpu_us = ($cpu1 - $cpu0) * 1e6 / $ticks
print(f'{s[\"msgs_per_sec\"]:.0f}')
print(f'run $r: {s[\"msgs_per_sec\"]:.0f} msgs/s, p99 {s[\"p99_us\"] / 1000:.1f} ms, '
      f'broker CPU {cpu_us / max(s[\"messages\"], 1):.1f} us/msg, RSS {$rss_kib / 1024:.0f} MiB, '
      f'replica 1 holds {$log / 2**30:.2f} GiB, reclaim scans direct $direct kswapd $kswapd, '
      f'free {$free_mib} MiB', file=sys.stderr)")
  rates+=("$rate")
done
python3 -c "
r = [float(x) for x in '${rates[*]}'.split()]
print({'first_msgs_per_sec': r[0], 'last_msgs_per_sec': r[-1], 'last_vs_first': round(r[-1] / r[0], 3)})"
kill -INT "$pid"; wait "$pid" 2>/dev/null || true
