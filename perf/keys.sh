#!/usr/bin/env bash
# A member holding many keys, side by side: the real etcd (Debian
# etcd-server) and ferrokv.
#   1. memory per key: $KEYS distinct keys of $KEY_SIZE bytes with
#      $VAL_SIZE-byte values written once each (ferro-bench put
#      --sequential-keys); the server's VmRSS before and after; bytes per
#      key = (after - before) / distinct keys counted, against the raw key +
#      value size;
#   2. restart: the member is killed (kill -9) and started again on the
#      same data dir; the time from the start until a serializable get of
#      the first key written answers it, polled every 20 ms.
# Fresh data dir and ports per server (under target/perf-work/), every server
# stopped by a trap on any exit. Writes perf/results/<UTC date>/keys.md,
# keys.json and raw/keys-*.
#
#   perf/keys.sh
#   KEYS=100000 perf/keys.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SCRIPT=keys
CLIENT_PORT=${CLIENT_PORT:-24379}
KEYS=${KEYS:-1000000}
KEY_SIZE=${KEY_SIZE:-32}
VAL_SIZE=${VAL_SIZE:-256}

# shellcheck source=perf/setup.sh
. "$ROOT/perf/setup.sh"

mkdir -p "$OUT/raw" "$WORK"
RUN_PREFIX=keys-
# shellcheck source=perf/servers.sh
. "$ROOT/perf/servers.sh"

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# The first key ferro-bench writes (client 0's first): its keys are the
# prefix and a zero-padded index, $KEY_SIZE bytes in all.
first_key() {
  local prefix=/bench/ width
  width=$((KEY_SIZE - ${#prefix}))
  printf '%s%0*d' "$prefix" "$width" 0
}

{
  machine_lines
  echo "keys: $KEYS of $KEY_SIZE bytes, values of $VAL_SIZE bytes"
} >"$OUT/raw/keys-machine.txt"

KEY=$(first_key)
for kind in etcd ferrokv; do
  echo "$kind $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/raw/keys-loadavg.txt"
  start_server "$kind" load
  before=$(rss_kib "$SERVER_PID")
  log "$kind: writing $KEYS keys"
  "$BENCH" put --endpoints "$ENDPOINT" --sequential-keys --key-space "$KEYS" --total "$KEYS" \
    --key-size "$KEY_SIZE" --val-size "$VAL_SIZE" --conns 8 --clients 256 --timeout 30s \
    --no-progress --json >"$OUT/raw/keys-put-$kind.json"
  sleep 2
  after=$(rss_kib "$SERVER_PID")
  # A range's count is the whole range's, whatever its limit.
  count=$(etcdctl --endpoints "$ENDPOINT" --command-timeout 60s get /bench/ --prefix \
    --limit 1 --write-out json | python3 -c 'import json,sys; print(json.load(sys.stdin)["count"])')
  found=$(etcdctl --endpoints "$ENDPOINT" get "$KEY" --consistency s --keys-only | sed -n 1p)
  [ "$found" = "$KEY" ] || { log "$kind: key $KEY not found (got '$found')"; exit 1; }
  size=$(du -sk "$WORK/$RUN_PREFIX$kind-data" | cut -f1)
  log "$kind: RSS $before -> $after KiB, $count keys, data dir $size KiB; kill -9"
  kill -9 "$SERVER_PID"
  wait "$SERVER_PID" 2>/dev/null || true
  # Started again by hand: spawn_member would start on a fresh data dir.
  args=(--name perf --data-dir "$WORK/$RUN_PREFIX$kind-data"
    --listen-client-urls "http://$ENDPOINT" --advertise-client-urls "http://$ENDPOINT"
    --listen-peer-urls "http://127.0.0.1:${PORTS[1]}"
    --initial-advertise-peer-urls "http://127.0.0.1:${PORTS[1]}"
    --initial-cluster "perf=http://127.0.0.1:${PORTS[1]}")
  case $kind in etcd) bin=$ETCD ;; ferrokv) bin=$FERROKV ;; esac
  t0=$(date +%s%N)
  env -u ETCD_DATA_DIR "$bin" "${args[@]}" >"$OUT/raw/keys-restart-$kind.log" 2>&1 &
  SERVER_PID=$!
  served=""
  for _ in $(seq 3000); do
    if [ "$(etcdctl --endpoints "$ENDPOINT" --dial-timeout 1s --command-timeout 1s \
      get "$KEY" --consistency s --keys-only 2>/dev/null | sed -n 1p)" = "$KEY" ]; then
      served=$(( ($(date +%s%N) - t0) / 1000000 ))
      break
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || { log "$kind exited at restart"; exit 1; }
    sleep 0.02
  done
  log "$kind: serving again after ${served:-?} ms"
  printf '{"kind":"%s","keys":%s,"counted":%s,"rss_before_kib":%s,"rss_after_kib":%s,"data_dir_kib":%s,"restart_ms":%s}\n' \
    "$kind" "$KEYS" "${count:-null}" "$before" "$after" "$size" "${served:-null}" \
    >"$OUT/raw/keys-$kind.json"
  stop_server
done

python3 - "$OUT" "$KEY_SIZE" "$VAL_SIZE" <<'PY'
import json, os, sys
out, ks, vs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
res = {}
for k in ("etcd", "ferrokv"):
    with open(os.path.join(out, "raw", f"keys-{k}.json")) as f:
        r = json.load(f)
    # Keys are counted, not assumed: ferro-bench's clients share the key
    # space unevenly, so a few keys are written twice and a few never.
    r["bytes_per_key"] = (r["rss_after_kib"] - r["rss_before_kib"]) * 1024 / (r["counted"] or r["keys"])
    r["raw_bytes_per_key"] = ks + vs
    with open(os.path.join(out, "raw", f"keys-put-{k}.json")) as f:
        r["put_rps"] = json.load(f)["throughput_rps"]
    res[k] = r
with open(os.path.join(out, "keys.json"), "w") as f:
    json.dump(res, f, indent=2)
rows = [
    ("puts", "keys", 1), ("distinct keys counted", "counted", 1),
    ("put req/s while loading", "put_rps", 1),
    ("RSS before MiB", "rss_before_kib", 1 / 1024), ("RSS after MiB", "rss_after_kib", 1 / 1024),
    ("resident bytes per key", "bytes_per_key", 1),
    ("... per raw key + value byte", None, None),
    ("data dir MiB", "data_dir_kib", 1 / 1024),
    ("serving again after kill -9, ms", "restart_ms", 1),
]
lines = ["| measure | etcd | ferrokv | ferrokv / etcd |", "|---|---:|---:|---:|"]
for label, key, scale in rows:
    if key is None:
        e = res["etcd"]["bytes_per_key"] / (ks + vs)
        k = res["ferrokv"]["bytes_per_key"] / (ks + vs)
    else:
        e, k = res["etcd"].get(key), res["ferrokv"].get(key)
        e = None if e is None else e * scale
        k = None if k is None else k * scale
    fmt = lambda v: "-" if v is None else f"{v:.2f}" if abs(v) < 10 else f"{v:.0f}"
    ratio = "-" if not e or k is None else f"{k / e:.2f}"
    lines.append(f"| {label} | {fmt(e)} | {fmt(k)} | {ratio} |")
with open(os.path.join(out, "keys.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
log "wrote $OUT/keys.md and $OUT/keys.json"
