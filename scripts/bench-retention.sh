#!/usr/bin/env bash
# Produce through retention (issue 14, item 8): a name server and three `raftmq broker`
# replicas (64 MiB CommitLog segments, SYNC_FLUSH, fileReservedTimeSecs=RETAIN_SECS, deleteWhen=*,
# cleaning every second) take ROUNDS produce runs of SECS seconds (256 sync senders, 1 KiB).
# A sampler reads every replica's data folder and its CommitLog folder each second; one line per
# run with msgs/s and the largest of each seen, then a summary: bytes written per replica, the
# largest folder and CommitLog, and what retention should hold (the bytes written in the last
# RETAIN_SECS at the measured rate, plus one segment). RETAIN_SECS=0 turns retention off, for the
# run to compare with. The folder also holds what does not shrink with retention: IndexFiles
# (created at their full size), ConsumeQueue files and the Raft index.
#
# The sampler also reads each replica's /status (`retention.end_position`, `first_position`),
# so the summary gives the exact bound: at each sample, the CommitLog bytes the retention window
# holds are the end's growth over the last RETAIN_SECS; `commitlog_over_window_max` is the most
# the CommitLog folder on disk held beyond that, and `held_over_window_max` the most the kept
# positions (end - first) did, both against one segment.
#
#   scripts/bench-retention.sh [RAFTMQ] [ROUNDS] [SECS] [RETAIN_SECS]
set -euo pipefail
BIN=${1:-target/release/raftmq}
ROUNDS=${2:-15}
SECS=${3:-20}
RETAIN=${4:-30}
SEGMENT=$((64 * 1024 * 1024))
d=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$d"' EXIT
wait_ready() { for _ in $(seq 1 600); do grep -q READY "$1" && return 0; sleep 0.1; done; echo "no READY in $1" >&2; exit 1; }
ns=127.0.0.1:39876
"$BIN" namesrv --listen "$ns" > "$d/ns.out" 2> "$d/ns.err" &
pids+=($!)
wait_ready "$d/ns.out"
peers="n0-127.0.0.1:39911;n1-127.0.0.1:39912;n2-127.0.0.1:39913"
retention="fileReservedTimeSecs=$RETAIN"
[ "$RETAIN" = 0 ] && retention="fileReservedTime=87840"
for k in 0 1 2; do
  cat > "$d/n$k.conf" <<CONF
brokerClusterName=BenchCluster
brokerName=broker-r
listenPort=$((38911 + k))
brokerIP1=127.0.0.1
httpListenAddr=127.0.0.1:$((38811 + k))
namesrvAddr=$ns
storePathRootDir=$d/n$k
enableDLegerCommitLog=true
dLegerGroup=broker-r
dLegerPeers=$peers
dLegerSelfId=n$k
flushDiskType=SYNC_FLUSH
mappedFileSizeCommitLog=$SEGMENT
$retention
deleteWhen=*
cleanResourceInterval=1000
CONF
  "$BIN" broker -c "$d/n$k.conf" > "$d/n$k.out" 2> "$d/n$k.err" &
  pids+=($!)
done
for k in 0 1 2; do wait_ready "$d/n$k.out"; done
: > "$d/sizes"
: > "$d/logs"
# Largest data folder and CommitLog folder of any replica, sampled every second.
( while true; do
    for k in 0 1 2; do du -s -B1 "$d/n$k" 2>/dev/null | cut -f1 || true; done | sort -n | tail -1 >> "$d/sizes"
    for k in 0 1 2; do du -s -B1 "$d/n$k/dledger-n$k/commitlog" 2>/dev/null | cut -f1 || true; done \
      | sort -n | tail -1 >> "$d/logs"
    sleep 1
  done ) &
pids+=($!)
# Per second and replica: time, CommitLog end and first positions, CommitLog folder on disk.
cat > "$d/sampler.py" <<'PY'
import json, os, sys, time, urllib.request
root, out = sys.argv[1], open(sys.argv[2], "a", buffering=1)
def on_disk(path):
    total = 0
    for base, _, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(base, f)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total
while True:
    for k in range(3):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{38811 + k}/status", timeout=1) as r:
                ret = json.load(r)["retention"]
        except Exception:
            continue
        log = on_disk(f"{root}/n{k}/dledger-n{k}/commitlog")
        print(time.time(), k, ret["end_position"], ret["first_position"], log, file=out)
    time.sleep(1)
PY
python3 "$d/sampler.py" "$d" "$d/positions" &
pids+=($!)
sent=0
rates=()
for r in $(seq 1 "$ROUNDS"); do
  : > "$d/sizes.round"
  start_lines=$(wc -l < "$d/sizes")
  start_logs=$(wc -l < "$d/logs")
  summary=$("$BIN" bench produce --namesrv "$ns" --producers 256 --message-bytes 1024 \
    --duration-secs "$SECS" 2>/dev/null | tail -1)
  biggest=$(tail -n +"$((start_lines + 1))" "$d/sizes" | sort -n | tail -1)
  biggest_log=$(tail -n +"$((start_logs + 1))" "$d/logs" | sort -n | tail -1)
  line=$(echo "$summary" | python3 -c "
import json, sys
s = json.load(sys.stdin)
print(s['msgs_per_sec'], s['messages'])")
  rate=${line% *}; msgs=${line#* }
  sent=$((sent + msgs))
  rates+=("$rate")
  python3 -c "print(f'run $r: {float($rate):.0f} msgs/s, largest replica folder {${biggest:-0} / 2**30:.2f} GiB, CommitLog {${biggest_log:-0} / 2**30:.2f} GiB, written {$sent * 1024 / 2**30:.2f} GiB of bodies')" >&2
done
biggest=$(sort -n "$d/sizes" | tail -1)
biggest_log=$(sort -n "$d/logs" | tail -1)
python3 -c "
r = [float(x) for x in '${rates[*]}'.split()]
rate = sum(r) / len(r)
retained = rate * 1100 * $RETAIN  # ~1100 bytes per 1 KiB message with its record and header
print({'retain_secs': $RETAIN, 'runs': len(r), 'mean_msgs_per_sec': round(rate),
       'first_run': r[0], 'last_run': r[-1],
       'body_gib_written': round($sent * 1024 / 2**30, 2),
       'largest_replica_folder_gib': round($biggest / 2**30, 2),
       'largest_commitlog_gib': round($biggest_log / 2**30, 2),
       'retention_plus_one_segment_gib': round((retained + $SEGMENT) / 2**30, 2) if $RETAIN else None})"
[ "$RETAIN" = 0 ] && exit 0
python3 - "$d/positions" "$RETAIN" "$SEGMENT" <<'PY'
import sys
from collections import defaultdict
path, retain, segment = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
samples = defaultdict(list)
for line in open(path):
    t, k, end, first, log = line.split()
    samples[k].append((float(t), int(end), int(first), int(log)))
over_disk = over_held = 0
for rows in samples.values():
    for t, end, first, log in rows:
        before = [e for (u, e, _, _) in rows if u <= t - retain]
        if not before:
            continue
        window = end - before[-1]
        over_disk = max(over_disk, log - window)
        over_held = max(over_held, end - first - window)
print({'segment_mib': segment >> 20,
       'commitlog_over_window_max_mib': round(over_disk / 2**20, 1),
       'held_over_window_max_mib': round(over_held / 2**20, 1),
       'within_window_plus_one_segment': over_disk <= segment})
PY
