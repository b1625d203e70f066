#!/usr/bin/env bash
# Write stalls side by side: the real etcd (Debian etcd-server) and ferrokv.
# Does a defragment, a backup, a compaction or a snapshot of the store pause
# the writes going on meanwhile?
#
# For each server and each operation: a fresh one-member server on a fresh
# data dir, $KEYS keys of $VAL_SIZE bytes written first (not measured), then
# ferro-bench put at $CLIENTS clients for $DURATION over the same keys (an
# update of each, so a compaction has history to drop), and $OP_AT into it
# the operation, timed:
#   none         nothing (the baseline: what the tail is without an operation)
#   defrag       etcdctl defrag
#   backup       etcdctl snapshot save (Maintenance.Snapshot streamed to a file)
#   compact      etcdctl compact to the revision the preload ended at
#   snapshot     the server started with --snapshot-count $SNAPSHOT_COUNT, so
#                it snapshots its store several times during the run (etcd: its
#                raft snapshot and bbolt commit; ferrokv: its shard snapshots)
# A stall shows as the put's maximum and p99.9 latency above the baseline's,
# and as lower throughput. Every server stopped by a trap on any exit.
# Writes perf/results/<UTC date>/stalls.md, stalls.json and raw/stalls-*.
#
#   perf/stalls.sh
#   KEYS=50000 DURATION=6s OP_AT=2s perf/stalls.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SCRIPT=stalls
CLIENT_PORT=${CLIENT_PORT:-25379}
KEYS=${KEYS:-200000}
VAL_SIZE=${VAL_SIZE:-256}
CLIENTS=${CLIENTS:-16}
DURATION=${DURATION:-12s}
OP_AT=${OP_AT:-4s}
SNAPSHOT_COUNT=${SNAPSHOT_COUNT:-20000}
OPS=${OPS:-none defrag backup compact snapshot}

# shellcheck source=perf/setup.sh
. "$ROOT/perf/setup.sh"

mkdir -p "$OUT/raw" "$WORK"
RUN_PREFIX=stalls-
# shellcheck source=perf/servers.sh
. "$ROOT/perf/servers.sh"

{
  machine_lines
  echo "keys: $KEYS, values of $VAL_SIZE bytes; put at $CLIENTS clients for $DURATION, the operation at $OP_AT"
  echo "snapshot runs: --snapshot-count $SNAPSHOT_COUNT"
} >"$OUT/raw/stalls-machine.txt"

revision() {
  etcdctl --endpoints "$ENDPOINT" endpoint status -w json |
    python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["Status"]["header"]["revision"])'
}

for kind in etcd ferrokv; do
  for op in $OPS; do
    echo "$kind $op $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/raw/stalls-loadavg.txt"
    flags=()
    [ "$op" = snapshot ] && flags=(--snapshot-count "$SNAPSHOT_COUNT")
    start_server "$kind" "$op" "${flags[@]}"
    log "$kind $op: writing $KEYS keys"
    "$BENCH" put --endpoints "$ENDPOINT" --sequential-keys --key-space "$KEYS" --total "$KEYS" \
      --val-size "$VAL_SIZE" --conns 8 --clients 256 --timeout 30s --no-progress --json \
      >"$OUT/raw/stalls-preload-$op-$kind.json"
    rev=$(revision)
    "$BENCH" put --endpoints "$ENDPOINT" --key-space "$KEYS" --val-size "$VAL_SIZE" \
      --clients "$CLIENTS" --duration "$DURATION" --timeout 30s --no-progress --json \
      >"$OUT/raw/stalls-put-$op-$kind.json" &
    bench=$!
    sleep "${OP_AT%s}"
    t0=$(date +%s%N)
    case $op in
      defrag) etcdctl --endpoints "$ENDPOINT" --command-timeout 120s defrag >/dev/null ;;
      backup) etcdctl --endpoints "$ENDPOINT" --command-timeout 120s snapshot save \
          "$WORK/stalls-backup-$kind.db" >/dev/null ;;
      compact) etcdctl --endpoints "$ENDPOINT" --command-timeout 120s compact "$rev" \
          --physical >/dev/null ;;
      *) ;;
    esac
    op_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    wait "$bench"
    log "$kind $op: the operation took $op_ms ms"
    printf '{"kind":"%s","op":"%s","op_ms":%s,"revision_before":%s}\n' \
      "$kind" "$op" "$op_ms" "$rev" >"$OUT/raw/stalls-$op-$kind.json"
    rm -f "$WORK/stalls-backup-$kind.db"
    stop_server
  done
done

python3 - "$OUT" "$OPS" <<'PY'
import json, os, sys
out, ops = sys.argv[1], sys.argv[2].split()
res = {}
for k in ("etcd", "ferrokv"):
    for op in ops:
        with open(os.path.join(out, "raw", f"stalls-{op}-{k}.json")) as f:
            r = json.load(f)
        with open(os.path.join(out, "raw", f"stalls-put-{op}-{k}.json")) as f:
            b = json.load(f)
        lat = b["latency_us"]
        r.update(
            rps=b["throughput_rps"],
            failed=b["requests"]["failed"],
            p50_ms=lat["p50"] / 1000,
            p99_ms=lat["p99"] / 1000,
            p999_ms=lat["p99_9"] / 1000,
            max_ms=lat["max"] / 1000,
        )
        res[f"{k}-{op}"] = r
with open(os.path.join(out, "stalls.json"), "w") as f:
    json.dump(res, f, indent=2)
lines = [
    "| operation | server | operation ms | put req/s | failed | p50 ms | p99 ms | p99.9 ms | max ms | max above baseline ms |",
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
]
for op in ops:
    for k in ("etcd", "ferrokv"):
        r, base = res[f"{k}-{op}"], res.get(f"{k}-none")
        above = "" if base is None or op == "none" else f"{r['max_ms'] - base['max_ms']:.1f}"
        lines.append(
            f"| {op} | {k} | {r['op_ms'] if op not in ('none', 'snapshot') else ''} | "
            f"{r['rps']:.0f} | {r['failed']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{r['p999_ms']:.2f} | {r['max_ms']:.1f} | {above} |"
        )
with open(os.path.join(out, "stalls.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
