#!/usr/bin/env bash
# Side by side: the real etcd (Debian etcd-server) and ferrokv, single member
# on loopback, the same ferro-bench workloads against each in alternation.
#
#   perf/run.sh                 # all workloads, 10 s each (about 10 minutes)
#   DURATION=5s perf/run.sh     # shorter
#   ONLY=put-c16 perf/run.sh    # one workload (names below)
#   SWEEP=clients=1,64 perf/run.sh   # the put-sweep's points
#
# Writes perf/results/<UTC date>/: results.json, results.md (table with
# ferrokv/etcd ratios, and a table per sweep), plot.svg, sweep-*.svg,
# machine.txt, raw/ (every ferro-bench JSON, its latency-percentile SVG and
# HdrHistogram log, server logs, /metrics after each run).
#
# Durability is equal: both fsync the WAL before acknowledging a write (etcd
# always does; ferrokv by design), both with their defaults otherwise, each
# server fresh (new data dir) for every run, data dirs side by side on the
# same filesystem (under target/perf-work/).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
DATE=$(date -u +%Y-%m-%d)
if [ -z "${OUT:-}" ]; then
  OUT=$ROOT/perf/results/$DATE
  # A second run on the same day gets its own folder, never the first's.
  if [ -e "$OUT/results.json" ]; then OUT=$OUT-$(date -u +%H%M); fi
fi
WORK=${WORK:-$ROOT/target/perf-work}
CLIENT_PORT=${CLIENT_PORT:-22379}
ONLY=${ONLY:-}
SWEEP=${SWEEP:-clients=1,8,64,256,1024}
# Each server start takes fresh ports (base + 2 x start number): the previous
# server's closed connections leave its port in TIME_WAIT for a while, and
# not every server binds with SO_REUSEADDR.
ENDPOINT=""

# name | ferro-bench arguments (endpoint and timing are added)
WORKLOADS=(
  "put-c1|put --conns 1 --clients 1 --key-space 100000"
  "put-c16|put --conns 4 --clients 16 --key-space 100000"
  "put-c64|put --conns 8 --clients 64 --key-space 100000"
  "range-s-c16|range --consistency s --conns 4 --clients 16 --key-space 1000"
  "range-s-c64|range --consistency s --conns 8 --clients 64 --key-space 1000"
  "range-l-c16|range --consistency l --conns 4 --clients 16 --key-space 1000"
  "range-l-c64|range --consistency l --conns 8 --clients 64 --key-space 1000"
  "txn-put-c16|txn-put --conns 4 --clients 16 --key-space 100000"
  "txn-mixed-c16|txn-mixed --conns 4 --clients 16 --key-space 10000 --read-ratio 0.5"
  "watch-get-c16|watch-get --conns 4 --clients 16 --key-space 1000 --watchers 100 --consistency s"
  "lease-keepalive-c16|lease-keepalive --conns 4 --clients 16 --leases 1000 --churn 0.1"
  "k8s-c16|k8s --conns 4 --clients 16 --key-space 10000"
  "put-sweep|put --conns 8 --key-space 100000 --sweep $SWEEP"
)

log() { printf '[perf %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if ! command -v etcd >/dev/null; then
  log "installing etcd-server (Debian)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq etcd-server
fi
ETCD=$(command -v etcd)

# FERROKV and BENCH (paths to binaries) skip the build: for a quick check of
# the script itself with debug binaries, never for recorded results.
if [ -z "${FERROKV:-}" ] || [ -z "${BENCH:-}" ]; then
  log "building ferrokv and ferro-bench (release)"
  (cd "$ROOT" && cargo build --release --bin ferrokv --bin ferro-bench)
  TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
  FERROKV=$TARGET_DIR/release/ferrokv
  BENCH=$TARGET_DIR/release/ferro-bench
fi

mkdir -p "$OUT/raw" "$WORK"
# shellcheck source=perf/servers.sh
. "$ROOT/perf/servers.sh"

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(uname -srm)"
  echo "cpu: $(lscpu | sed -n 's/^Model name: *//p') x $(nproc) (nproc)"
  echo "memory:"; free -h
  echo "disk (data dirs under $WORK):"; df -h "$WORK"
  echo "filesystem: $(findmnt -no SOURCE,FSTYPE,OPTIONS --target "$WORK" 2>/dev/null || true)"
  echo "etcd: $("$ETCD" --version | tr '\n' ' ')"
  echo "ferrokv: $(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo unknown)"
  echo "rustc: $(rustc --version)"
  echo "duration: $DURATION, warmup: $WARMUP"
} >"$OUT/machine.txt"

RUN_START=$(date +%s)
for i in "${!WORKLOADS[@]}"; do
  name=${WORKLOADS[$i]%%|*}
  args=${WORKLOADS[$i]#*|}
  if [ -n "$ONLY" ] && [ "$ONLY" != "$name" ]; then continue; fi
  for kind in etcd ferrokv; do
    log "$name against $kind: ferro-bench $args"
    # The machine may be shared: keep the load seen by each run with it.
    echo "$name $kind $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/raw/loadavg.txt"
    start_server "$kind" "$name"
    # shellcheck disable=SC2086 # args is a word list on purpose
    "$BENCH" $args --endpoints "$ENDPOINT" --duration "$DURATION" --warmup "$WARMUP" \
      --plot "$OUT/raw/$name-$kind.svg" --hdr-out "$OUT/raw/$name-$kind.hlog" \
      --no-progress --json >"$OUT/raw/$name-$kind.json" ||
      log "$name against $kind: no successful request (see raw/$name-$kind.json)"
    # Only the disk and server metrics are kept (etcd's full dump is ~75 KB).
    { curl -s --max-time 5 "http://$ENDPOINT/metrics" || true; } |
      grep -E '^etcd_(disk|server|mvcc_db)_' >"$OUT/raw/$name-$kind.metrics" || true
    stop_server
  done
done
log "runs took $(( $(date +%s) - RUN_START )) s"

# The disk's floor in the data dirs' filesystem, right after the runs: what
# one durable 4 KiB append costs without any server (perf/floor.py).
log "disk floor: perf/floor.py $WORK"
python3 "$ROOT/perf/floor.py" "$WORK" 3000 --json >"$OUT/raw/floor.json" ||
  log "disk floor: failed"

python3 "$ROOT/perf/report.py" "$OUT"
log "wrote $OUT/results.json, $OUT/results.md, $OUT/plot.svg, $OUT/sweep-*.svg"
