# Sourced first by perf/keys.sh, perf/stalls.sh and perf/scaling.sh: the
# defaults they share, their log function and the binaries (built when
# missing). Expects ROOT (the checkout) and SCRIPT (the name in log lines);
# OUT, WORK, FERROKV and BENCH may be set by the caller.

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
DATE=$(date -u +%Y-%m-%d)
OUT=${OUT:-$ROOT/perf/results/$DATE}
WORK=${WORK:-$ROOT/target/perf-work}
ENDPOINT=""

log() { printf '[%s %s] %s\n' "$SCRIPT" "$(date +%H:%M:%S)" "$*" >&2; }

ETCD=$(command -v etcd) || { log "etcd not found (apt-get install etcd-server)"; exit 1; }
FERROKV=${FERROKV:-$TARGET_DIR/release/ferrokv}
BENCH=${BENCH:-$TARGET_DIR/release/ferro-bench}
[ -x "$FERROKV" ] || (cd "$ROOT" && cargo build --release --bin ferrokv)
[ -x "$BENCH" ] || (cd "$ROOT" && cargo build --release -p ferro-bench --bin ferro-bench)

# machine_lines: what every raw/*-machine.txt starts with.
machine_lines() {
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(uname -srm), $(nproc) CPUs, loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "etcd: $("$ETCD" --version | tr '\n' ' ')"
  echo "ferrokv: $(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo unknown)"
}
