#!/usr/bin/env python3
"""Writes GIB GiB to PATH in 1 MiB writes, fdatasync every 256 MiB, and prints the time per
GiB; with "drop" it drops each synced 256 MiB from the page cache (posix_fadvise DONTNEED).
Shows what page-cache growth costs on a machine, without raftmq (BENCHMARKS.md, issue 14 item 7).

    scripts/pagecache-writes.py /tmp/x.bin 10 keep; scripts/pagecache-writes.py /tmp/x.bin 10 drop
"""
import os, sys, time
path, gib, drop = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "drop"
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
buf = b"\x5a" * (1 << 20)
chunk = 256 << 20
t = time.time(); off = 0
for g in range(gib):
    for _ in range(4):
        start = off
        for _ in range(256):
            os.pwrite(fd, buf, off); off += len(buf)
        os.fdatasync(fd)
        if drop:
            os.posix_fadvise(fd, start, chunk, os.POSIX_FADV_DONTNEED)
    now = time.time(); print(f"GiB {g+1}: {now - t:.2f} s", flush=True); t = now
os.close(fd); os.unlink(path)
