#!/usr/bin/env bash
# Watch side by side: the real etcd (Debian etcd-server) and ferrokv.
#   1. memory per idle watcher: ferro-bench watch-idle holds $IDLE_WATCHERS
#      watchers (one key each) and reads the server's VmRSS before connecting
#      and at the end of the hold (--server-pid): bytes/watcher = delta / N;
#   2. event delivery latency: ferro-bench watch, $EV_WATCHERS watchers on one
#      prefix, one writer at $EV_RATE puts/s, $EV_TOTAL puts.
# Each run gets a fresh server on a fresh data dir (under target/perf-work/),
# stopped by a trap on any exit. Writes perf/results/<UTC date>/watch.md,
# watch.json and raw/watch-*.{json,log}.
#
#   perf/watch.sh
#   IDLE_WATCHERS=20000 EV_WATCHERS=1000 perf/watch.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
DATE=$(date -u +%Y-%m-%d)
OUT=${OUT:-$ROOT/perf/results/$DATE}
WORK=${WORK:-$ROOT/target/perf-work}
CLIENT_PORT=${CLIENT_PORT:-23379}
IDLE_WATCHERS=${IDLE_WATCHERS:-100000}
IDLE_STREAMS=${IDLE_STREAMS:-1000}
IDLE_CONNS=${IDLE_CONNS:-10}
IDLE_HOLD=${IDLE_HOLD:-10s}
IDLE_TIMEOUT=${IDLE_TIMEOUT:-90s}
EV_WATCHERS=${EV_WATCHERS:-10000}
EV_STREAMS=${EV_STREAMS:-100}
EV_CONNS=${EV_CONNS:-4}
EV_RATE=${EV_RATE:-10}
EV_TOTAL=${EV_TOTAL:-100}
ENDPOINT=""

log() { printf '[watch %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

ETCD=$(command -v etcd) || { log "etcd not found (apt-get install etcd-server)"; exit 1; }
FERROKV=$TARGET_DIR/release/ferrokv
BENCH=$TARGET_DIR/release/ferro-bench
[ -x "$FERROKV" ] || (cd "$ROOT" && cargo build --release --bin ferrokv)
(cd "$ROOT" && cargo build --release -p ferro-bench --bin ferro-bench)

mkdir -p "$OUT/raw" "$WORK"
RUN_PREFIX=watch-
# shellcheck source=perf/servers.sh
. "$ROOT/perf/servers.sh"

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(uname -srm), $(nproc) CPUs, loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "etcd: $("$ETCD" --version | tr '\n' ' ')"
  echo "ferrokv: $(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo unknown)"
} >"$OUT/raw/watch-machine.txt"

for kind in etcd ferrokv; do
  echo "idle $kind $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/raw/watch-loadavg.txt"
  start_server "$kind" idle
  sleep 1
  log "watch-idle against $kind: $IDLE_WATCHERS watchers"
  "$BENCH" watch-idle --endpoints "$ENDPOINT" --watchers "$IDLE_WATCHERS" \
    --streams "$IDLE_STREAMS" --conns "$IDLE_CONNS" --hold "$IDLE_HOLD" \
    --timeout "$IDLE_TIMEOUT" --server-pid "$SERVER_PID" --json \
    >"$OUT/raw/watch-idle-$kind.json" 2>"$OUT/raw/watch-idle-$kind.err" ||
    log "watch-idle against $kind failed: $(cat "$OUT/raw/watch-idle-$kind.err")"
  stop_server
done
for kind in etcd ferrokv; do
  echo "events $kind $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/raw/watch-loadavg.txt"
  start_server "$kind" events
  log "watch against $kind: $EV_WATCHERS watchers, $EV_TOTAL puts at $EV_RATE/s"
  "$BENCH" watch --endpoints "$ENDPOINT" --watchers "$EV_WATCHERS" \
    --streams "$EV_STREAMS" --conns "$EV_CONNS" --rate "$EV_RATE" --total "$EV_TOTAL" \
    --json >"$OUT/raw/watch-events-$kind.json" 2>"$OUT/raw/watch-events-$kind.err" ||
    log "watch against $kind failed: $(cat "$OUT/raw/watch-events-$kind.err")"
  stop_server
done

python3 - "$OUT" <<'PY'
import json, sys, os
out = sys.argv[1]
raw = os.path.join(out, "raw")
def load(name):
    try:
        with open(os.path.join(raw, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
res = {k: {"idle": load(f"watch-idle-{k}.json"), "events": load(f"watch-events-{k}.json")}
       for k in ("etcd", "ferrokv")}
with open(os.path.join(out, "watch.json"), "w") as f:
    json.dump(res, f, indent=2)
def get(k, part, *path):
    v = res[k][part]
    for p in path:
        if not isinstance(v, dict) or p not in v:
            return None
        v = v[p]
    return v
def fmt(v, d=1):
    return "-" if v is None else (f"{v:.{d}f}" if isinstance(v, float) else str(v))
def ratio(a, b):
    return "-" if not a or b is None else f"{b / a:.2f}"
rows = [
    ("idle: watchers", ("idle", "watchers"), 1, 0),
    ("idle: setup s", ("idle", "setup_secs"), 1, 2),
    ("idle: created/s", ("idle", "created_per_sec"), 1, 0),
    ("idle: RSS before MiB", ("idle", "rss_before"), 1 / 2**20, 1),
    ("idle: RSS held MiB", ("idle", "rss_held"), 1 / 2**20, 1),
    ("idle: bytes per watcher", ("idle", "bytes_per_watcher"), 1, 0),
    ("watch: watchers", ("events", "watchers"), 1, 0),
    ("watch: puts acked", ("events", "puts_acked"), 1, 0),
    ("watch: events expected", ("events", "events_expected"), 1, 0),
    ("watch: events received", ("events", "events_received"), 1, 0),
    ("watch: events/s", ("events", "events_per_sec"), 1, 0),
    ("watch: latency from ack p50 ms", ("events", "latency_from_ack_us", "p50"), 1e-3, 2),
    ("watch: latency from ack p99 ms", ("events", "latency_from_ack_us", "p99"), 1e-3, 2),
    ("watch: latency from ack max ms", ("events", "latency_from_ack_us", "max"), 1e-3, 2),
    ("watch: latency from send p50 ms", ("events", "latency_from_send_us", "p50"), 1e-3, 2),
    ("watch: latency from send p99 ms", ("events", "latency_from_send_us", "p99"), 1e-3, 2),
    ("watch: events before their put's ack", ("events", "events_before_ack"), 1, 0),
    ("watch: put p99 ms", ("events", "put_latency_us", "p99"), 1e-3, 2),
]
lines = ["| measure | etcd | ferrokv | ferrokv / etcd |", "|---|---:|---:|---:|"]
for label, (part, *path), scale, d in rows:
    e, k = get("etcd", part, *path), get("ferrokv", part, *path)
    e = None if e is None else e * scale
    k = None if k is None else k * scale
    lines.append(f"| {label} | {fmt(e, d)} | {fmt(k, d)} | {ratio(e, k)} |")
with open(os.path.join(out, "watch.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
log "wrote $OUT/watch.md and $OUT/watch.json"
