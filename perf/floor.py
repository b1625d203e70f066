#!/usr/bin/env python3
"""The disk's floor for a durable append: 4 KiB pwrite + fdatasync, N times.

Usage: perf/floor.py DIR [COUNT] [--json]

Writes in DIR (use the data dirs' filesystem) into a 64 MiB file at
consecutive 4 KiB offsets, as a WAL appends, each of six ways: the file
prepared

- written:    zero-filled and synced first (every append an overwrite, so
              a sync flushes data only), or
- fallocated: fallocate(2) reserves the blocks unwritten (each sync also
              commits the extent conversion to the journal);

and each append

- buffered:     pwrite, then fdatasync;
- direct:       O_DIRECT pwrite, then fdatasync;
- direct-dsync: O_DIRECT|O_DSYNC pwrite and no fdatasync (the write is
                durable when it returns).

Prints p50/p90/p99/max in ms per way (or one JSON object with --json).
"""

import json
import mmap
import os
import sys
import time

SIZE = 64 << 20
BLOCK = 4096


def percentile(sorted_ns, q):
    i = min(len(sorted_ns) - 1, int(q * len(sorted_ns)))
    return sorted_ns[i] / 1e6


def summary(ns):
    ns = sorted(ns)
    return {
        "count": len(ns),
        "p50_ms": round(percentile(ns, 0.50), 3),
        "p90_ms": round(percentile(ns, 0.90), 3),
        "p99_ms": round(percentile(ns, 0.99), 3),
        "max_ms": round(ns[-1] / 1e6, 3),
    }


def zero_fill(path):
    if os.path.exists(path):
        os.unlink(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    chunk = b"\0" * (1 << 20)
    for off in range(0, SIZE, len(chunk)):
        os.pwrite(fd, chunk, off)
    os.fsync(fd)
    os.close(fd)


def fallocate(path):
    if os.path.exists(path):
        os.unlink(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    os.posix_fallocate(fd, 0, SIZE)
    os.fsync(fd)
    os.close(fd)


def appends(fd, count, buf, sync):
    out = []
    for i in range(count):
        t0 = time.perf_counter_ns()
        os.pwrite(fd, buf, (i * BLOCK) % SIZE)
        if sync:
            os.fdatasync(fd)
        out.append(time.perf_counter_ns() - t0)
    return out


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if not args:
        sys.exit(__doc__)
    as_json = "--json" in sys.argv
    d = args[0]
    count = int(args[1]) if len(args) > 1 else 3000
    count = min(count, SIZE // BLOCK)
    path = os.path.join(d, "floor.tmp")
    # An aligned buffer, as O_DIRECT wants.
    buf = mmap.mmap(-1, BLOCK)
    buf.write(b"x" * BLOCK)
    result = {"dir": d, "block_bytes": BLOCK, "count": count}
    modes = {
        "buffered": (0, True),
        "direct": (os.O_DIRECT, True),
        "direct-dsync": (os.O_DIRECT | os.O_DSYNC, False),
    }
    try:
        for prep in ("written", "fallocated"):
            for mode, (flags, sync) in modes.items():
                if prep == "written":
                    zero_fill(path)
                else:
                    fallocate(path)
                fd = os.open(path, os.O_RDWR | flags)
                result[f"{prep}/{mode}"] = summary(appends(fd, count, buf, sync))
                os.close(fd)
    finally:
        if os.path.exists(path):
            os.unlink(path)
    if as_json:
        print(json.dumps(result))
        return
    print(f"4 KiB appends, {count} times each, in {d}")
    for way, s in result.items():
        if isinstance(s, dict):
            print(
                f"  {way:24} p50 {s['p50_ms']:.3f} ms  p90 {s['p90_ms']:.3f}  "
                f"p99 {s['p99_ms']:.3f}  max {s['max_ms']:.3f}"
            )


if __name__ == "__main__":
    main()
