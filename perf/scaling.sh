#!/usr/bin/env bash
# Write scaling with shards, the disk taken out: ferrokv with --shards 1 up
# to --shards N (N = the cores, or $SHARDS), its data dir on a tmpfs
# ($WORK, /dev/shm by default: fdatasync there returns at once, so what is
# measured is the CPU per write, not the disk), and etcd on the same tmpfs
# for reference. ferro-bench put (and txn-put) at each of $CLIENTS, $DURATION
# each after $WARMUP; ferro-bench runs on the same cores as the server, as in
# every record here. Every server stopped by a trap on any exit. Writes
# perf/results/<UTC date>/scaling.md, scaling.json and raw/scaling-*.
#
#   perf/scaling.sh
#   SHARDS="1 2 4" CLIENTS="64 256" perf/scaling.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SCRIPT=scaling
WORK=${WORK:-/dev/shm/ferrokv-perf-scaling}
CLIENT_PORT=${CLIENT_PORT:-26379}
SHARDS=${SHARDS:-$(seq -s ' ' 1 "$(nproc)")}
CLIENTS=${CLIENTS:-64 256}
WORKLOADS=${WORKLOADS:-put txn-put}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}

# shellcheck source=perf/setup.sh
. "$ROOT/perf/setup.sh"

mkdir -p "$OUT/raw" "$WORK"
fs=$(stat -f -c %T "$WORK")
[ "$fs" = tmpfs ] || log "warning: $WORK is on $fs, not a tmpfs: the disk is in the measure"
RUN_PREFIX=scaling-
# shellcheck source=perf/servers.sh
. "$ROOT/perf/servers.sh"
trap 'stop_servers; rm -rf "$WORK"' EXIT INT TERM

{
  machine_lines
  echo "data dirs on $WORK ($fs); shards: $SHARDS; clients: $CLIENTS; $WORKLOADS for $DURATION after $WARMUP"
} >"$OUT/raw/scaling-machine.txt"

for server in etcd $(for s in $SHARDS; do echo "ferrokv-s$s"; done); do
  case $server in
    etcd) kind=etcd; flags=() ;;
    ferrokv-s*) kind=ferrokv; flags=(--shards "${server#ferrokv-s}") ;;
  esac
  for w in $WORKLOADS; do
    for c in $CLIENTS; do
      echo "$server $w $c $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/raw/scaling-loadavg.txt"
      start_server "$kind" "$server-$w-c$c" "${flags[@]}"
      log "$server: $w at $c clients"
      "$BENCH" "$w" --endpoints "$ENDPOINT" --conns 8 --clients "$c" --duration "$DURATION" \
        --warmup "$WARMUP" --no-progress --json >"$OUT/raw/scaling-$server-$w-c$c.json"
      stop_server
    done
  done
done

python3 - "$OUT" "$SHARDS" "$CLIENTS" "$WORKLOADS" <<'PY'
import json, os, sys
out = sys.argv[1]
shards, clients, workloads = (a.split() for a in sys.argv[2:5])
def load(server, w, c):
    with open(os.path.join(out, "raw", f"scaling-{server}-{w}-c{c}.json")) as f:
        b = json.load(f)
    return {"rps": b["throughput_rps"], "p99_ms": b["latency_us"]["p99"] / 1000,
            "failed": b["requests"]["failed"]}
res = {}
for w in workloads:
    for c in clients:
        for server in ["etcd"] + [f"ferrokv-s{s}" for s in shards]:
            res[f"{server}-{w}-c{c}"] = load(server, w, c)
with open(os.path.join(out, "scaling.json"), "w") as f:
    json.dump(res, f, indent=2)
lines = ["| workload | clients | server | req/s | p99 ms | failed | / one shard | target 0.8·N |",
         "|---|---:|---|---:|---:|---:|---:|---:|"]
for w in workloads:
    for c in clients:
        one = res[f"ferrokv-s{shards[0]}-{w}-c{c}"]["rps"] / int(shards[0])
        for server in ["etcd"] + [f"ferrokv-s{s}" for s in shards]:
            r = res[f"{server}-{w}-c{c}"]
            n = int(server.split("-s")[1]) if server.startswith("ferrokv") else None
            ratio = f"{r['rps'] / one:.2f}" if n else ""
            target = f"{0.8 * n:.1f}" if n else ""
            lines.append(f"| {w} | {c} | {server} | {r['rps']:.0f} | {r['p99_ms']:.2f} | "
                         f"{r['failed']} | {ratio} | {target} |")
with open(os.path.join(out, "scaling.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
