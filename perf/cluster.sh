#!/usr/bin/env bash
# Three members side by side: a 3-member etcd (Debian etcd-server) and a
# 3-member ferrokv (--shards 2), every member on 127.0.0.1, one cluster at a
# time, the same ferro-bench points against each in alternation, then the
# failover time when the leader is killed with SIGKILL under load.
#
#   perf/cluster.sh                          # about 6 minutes of runs
#   DURATION=5s perf/cluster.sh              # shorter points
#   ONLY=put-c64 perf/cluster.sh             # one point (FAILOVER=0: none)
#   SRC=/tmp/head perf/cluster.sh            # build ferrokv from that tree
#                                            # (e.g. a `git archive HEAD` export)
#
# Before measuring it waits (up to QUIET_MAX s, polling every QUIET_POLL s)
# until the 1-minute load average is below QUIET_LOAD, and runs anyway,
# saying so in machine.txt, if it never is.
#
# Writes perf/results/<UTC date>-cluster/: results.json, results.md,
# plot.svg (perf/report.py), machine.txt, raw/ (each ferro-bench JSON, SVG
# and HdrHistogram log, every member's log, the leader's /metrics, load
# average and CPU time at each run's start and end, the failover probes).
#
# Each point gets fresh clusters: data dirs under one temp dir (WORK_BASE,
# default /tmp, refused if tmpfs: both servers fsync there), fresh ports from
# CLIENT_PORT up. ferro-bench connects to all three members with the leader's
# endpoint first (so --conns 1 talks to the leader; 9 connections spread the
# clients over the three members evenly). Every process this script starts is
# stopped by pid on exit (trap), none by name.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SRC=${SRC:-$ROOT}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
TOTAL=${TOTAL:-500000}
DATE=$(date -u +%Y-%m-%d)
OUT=${OUT:-$ROOT/perf/results/$DATE-cluster}
WORK_BASE=${WORK_BASE:-${TMPDIR:-/tmp}}
CLIENT_PORT=${CLIENT_PORT:-24379}
ONLY=${ONLY:-}
QUIET_LOAD=${QUIET_LOAD:-0.7}
QUIET_MAX=${QUIET_MAX:-1200}
QUIET_POLL=${QUIET_POLL:-30}
FAILOVER=${FAILOVER:-1}
# Failover, FAILOVER_RUNS times per server (an election timeout is random,
# so one kill is one sample): FAILOVER_LOAD of puts at 64 clients on the two
# followers, the leader killed FAILOVER_KILL_AT s after the load starts; an
# etcdctl put loop with PROBE_TIMEOUT dial and command timeouts runs beside it.
FAILOVER_RUNS=${FAILOVER_RUNS:-3}
FAILOVER_LOAD=${FAILOVER_LOAD:-14s}
FAILOVER_KILL_AT=${FAILOVER_KILL_AT:-6}
PROBE_TIMEOUT=${PROBE_TIMEOUT:-250ms}
MEMBERS=3
SHARDS=2

# name | ferro-bench arguments (endpoints and timing are added)
POINTS=(
  "put-c1|put --conns 1 --clients 1 --key-space 100000"
  "put-c64|put --conns 9 --clients 64 --key-space 100000"
  "put-c1024|put --conns 9 --clients 1024 --key-space 100000"
  "range-s-c64|range --consistency s --conns 9 --clients 64 --key-space 1000"
  "range-l-c64|range --consistency l --conns 9 --clients 64 --key-space 1000"
)

log() { printf '[cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

ETCD=$(command -v etcd) || { log "etcd not found (apt-get install etcd-server)"; exit 1; }
command -v etcdctl >/dev/null || { log "etcdctl not found (apt-get install etcd-client)"; exit 1; }
# FERROKV and BENCH (paths to binaries) skip the build, as in run.sh: only
# for checking the script itself (e.g. debug binaries, OUT=/tmp/x), never for
# recorded results.
if [ -z "${FERROKV:-}" ] || [ -z "${BENCH:-}" ]; then
  log "building ferrokv, ferro-bench (release) in $SRC"
  (cd "$SRC" && cargo build --release --bins)
  TARGET_DIR=${CARGO_TARGET_DIR:-$SRC/target}
  FERROKV=$TARGET_DIR/release/ferrokv
  BENCH=$TARGET_DIR/release/ferro-bench
fi

if [ "$(findmnt -no FSTYPE --target "$WORK_BASE")" = tmpfs ]; then
  log "$WORK_BASE is tmpfs (fsync is free there): set WORK_BASE to a disk"; exit 1
fi
mkdir -p "$OUT/raw"
# Appended to run by run: start empty (a rerun into the same OUT).
rm -f "$OUT"/raw/{quiet,loadavg,cpu,leaders,exits}.txt
WORK=$(mktemp -d "$WORK_BASE/ferrokv-perf-cluster.XXXXXX")
# shellcheck source=perf/servers.sh
. "$ROOT/perf/servers.sh"

BENCH_PID=""
PROBE_PID=""
cleanup() {
  local pid
  for pid in $BENCH_PID $PROBE_PID; do kill "$pid" 2>/dev/null || true; done
  for pid in $BENCH_PID $PROBE_PID; do wait "$pid" 2>/dev/null || true; done
  stop_servers
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# Busy CPU seconds of the whole machine (/proc/stat), and of the cluster's
# members (utime + stime of every thread, io_uring workers included).
TICKS=$(getconf CLK_TCK)
machine_cpu() { awk -v t="$TICKS" '/^cpu /{printf "%.2f", ($2+$3+$4+$7+$8+$9)/t}' /proc/stat; }
members_cpu() {
  local pid sum=0 c
  for pid in "${CLUSTER_PIDS[@]}"; do
    [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || continue
    c=$(awk '{print $14+$15}' "/proc/$pid/stat")
    sum=$((sum + c))
  done
  awk -v s="$sum" -v t="$TICKS" 'BEGIN{printf "%.2f", s/t}'
}

# wait_quiet: until the 1-minute load is below QUIET_LOAD, bounded.
wait_quiet() {
  local waited=0 l
  while :; do
    l=$(cut -d' ' -f1 /proc/loadavg)
    echo "$(date -u +%H:%M:%S) $(loadavg)" >>"$OUT/raw/quiet.txt"
    if awk -v l="$l" -v q="$QUIET_LOAD" 'BEGIN{exit !(l < q)}'; then
      log "machine quiet (load $l) after $waited s"
      QUIET="yes: 1-minute load $l < $QUIET_LOAD after waiting $waited s"
      return 0
    fi
    if [ "$waited" -ge "$QUIET_MAX" ]; then
      log "machine NOT quiet after $QUIET_MAX s (load $l): running anyway"
      QUIET="NO: 1-minute load still $l (>= $QUIET_LOAD) after waiting $QUIET_MAX s; ran anyway"
      return 0
    fi
    log "waiting for a quiet machine: load $l >= $QUIET_LOAD ($waited of $QUIET_MAX s)"
    sleep "$QUIET_POLL"
    waited=$((waited + QUIET_POLL))
  done
}

# find_leader [member index...]: LEADER = index of the member the given ones
# (default: all) agree leads, via `etcdctl endpoint status -w json` (with
# --cluster when asking all: the members' own list). Bounded: 20 tries.
find_leader() {
  local idx=("$@") eps i
  [ ${#idx[@]} -gt 0 ] || idx=("${!CLUSTER_ENDPOINTS[@]}")
  local status_args=(endpoint status -w json)
  if [ ${#idx[@]} = ${#CLUSTER_ENDPOINTS[@]} ]; then
    eps=${CLUSTER_ENDPOINTS[${idx[0]}]}; status_args+=(--cluster)
  else
    eps=$(for i in "${idx[@]}"; do echo "${CLUSTER_ENDPOINTS[$i]}"; done | paste -sd,)
  fi
  for _ in $(seq 20); do
    local ep
    ep=$(etcdctl --endpoints "$eps" --dial-timeout 1s --command-timeout 2s "${status_args[@]}" 2>/dev/null |
      python3 -c '
import json, sys
try:
    st = json.load(sys.stdin)
except ValueError:
    sys.exit(1)
leaders = {s["Status"]["leader"] for s in st}
ep = [s["Endpoint"] for s in st if s["Status"]["header"]["member_id"] == s["Status"]["leader"]]
if len(leaders) == 1 and 0 not in leaders and len(ep) == 1:
    print(ep[0].split("://")[-1])
else:
    sys.exit(1)' || true)
    for i in "${!CLUSTER_ENDPOINTS[@]}"; do
      if [ -n "$ep" ] && [ "${CLUSTER_ENDPOINTS[$i]}" = "$ep" ]; then LEADER=$i; return 0; fi
    done
    sleep 0.5
  done
  log "no agreed leader"; return 1
}

# The cluster's endpoints, the leader's first.
leader_first() {
  local i out=${CLUSTER_ENDPOINTS[$LEADER]}
  for i in "${!CLUSTER_ENDPOINTS[@]}"; do
    [ "$i" = "$LEADER" ] || out+=",${CLUSTER_ENDPOINTS[$i]}"
  done
  echo "$out"
}

# Members that exited during a run (they should not).
check_members() {
  local i
  for i in "${!CLUSTER_PIDS[@]}"; do
    local pid=${CLUSTER_PIDS[$i]}
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      log "WARNING: $1 ${CLUSTER_NAMES[$i]} exited during $2"
      echo "$2 $1 ${CLUSTER_NAMES[$i]} exited" >>"$OUT/raw/exits.txt"
    fi
  done
}

start() {
  local kind=$1 name=$2 extra=()
  [ "$kind" = ferrokv ] && extra=(--shards "$SHARDS")
  start_cluster "$kind" "$name" "$MEMBERS" "${extra[@]}"
  find_leader
  echo "$name $kind leader ${CLUSTER_NAMES[$LEADER]}" >>"$OUT/raw/leaders.txt"
}

# One point against one kind: fresh cluster, ferro-bench, load average and
# CPU time at start and end, the leader's /metrics.
run_point() {
  local name=$1 args=$2 kind=$3 base=$OUT/raw/$1-$3
  start "$kind" "$name"
  local eps la0 m0 c0 t0
  eps=$(leader_first)
  log "$name against $kind (leader ${CLUSTER_NAMES[$LEADER]}): ferro-bench $args"
  la0=$(loadavg); m0=$(machine_cpu); c0=$(members_cpu); t0=$(date +%s.%N)
  # shellcheck disable=SC2086 # args is a word list on purpose
  /usr/bin/time -f '%U %S' -o "$base.time" \
    "$BENCH" $args --endpoints "$eps" --duration "$DURATION" --warmup "$WARMUP" \
    --total "$TOTAL" --plot "$base.svg" --hdr-out "$base.hlog" \
    --no-progress --json >"$base.json" ||
    log "$name against $kind: no successful request (see $base.json)"
  local t1 m1 c1
  t1=$(date +%s.%N); m1=$(machine_cpu); c1=$(members_cpu)
  echo "$name $kind start $la0 end $(loadavg)" >>"$OUT/raw/loadavg.txt"
  echo "$name $kind $t0 $t1 $m0 $m1 $c0 $c1 $(tr -s ' ' <"$base.time" | tail -1)" >>"$OUT/raw/cpu.txt"
  check_members "$kind" "$name"
  { curl -s --max-time 5 "http://${CLUSTER_ENDPOINTS[$LEADER]}/metrics" || true; } |
    grep -E '^etcd_(disk|server|mvcc_db|network)_' >"$base.metrics" || true
  stop_cluster
}

# probe_loop <endpoints> <out file> <stop file>: etcdctl puts one after the
# other, each with PROBE_TIMEOUT to dial and to finish; one line per attempt:
# start and end (epoch seconds) and exit status. Bounded by the stop file
# and by 120 s.
probe_loop() {
  local i=0 s e rc until=$(($(date +%s) + 120))
  while [ ! -e "$3" ] && [ "$(date +%s)" -lt "$until" ]; do
    s=$(date +%s.%N)
    rc=0
    etcdctl --endpoints "$1" --dial-timeout "$PROBE_TIMEOUT" --command-timeout "$PROBE_TIMEOUT" \
      put /failover/probe "$i" >/dev/null 2>&1 || rc=$?
    e=$(date +%s.%N)
    echo "$s $e $rc" >>"$2"
    i=$((i + 1))
  done
}

# Failover: put load at 64 clients over the two followers (ferro-bench keeps
# a client on its connection, so load on the killed member would only spin
# on refused connections), the probe loop on the same two; kill -9 of the
# leader; raw/failover-<kind>-<run>-{load.json,load.hlog,probe.txt,kill.txt}.
run_failover() {
  local kind=$1 run=$2 base=$OUT/raw/failover-$1-$2
  start "$kind" "failover-$run"
  local old=$LEADER survivors=() i
  for i in "${!CLUSTER_ENDPOINTS[@]}"; do [ "$i" = "$old" ] || survivors+=("$i"); done
  local eps
  eps=$(for i in "${survivors[@]}"; do echo "${CLUSTER_ENDPOINTS[$i]}"; done | paste -sd,)
  log "failover $run against $kind: put load on $eps, leader ${CLUSTER_NAMES[$old]} killed after ${FAILOVER_KILL_AT} s"
  local la0 t_start
  la0=$(loadavg)
  t_start=$(date +%s.%N)
  "$BENCH" put --conns 6 --clients 64 --key-space 100000 --endpoints "$eps" \
    --duration "$FAILOVER_LOAD" --timeout 1s --hdr-out "$base-load.hlog" --hdr-interval 100ms \
    --no-progress --json >"$base-load.json" &
  BENCH_PID=$!
  rm -f "$base-probe.txt" "$WORK/probe.stop"
  sleep $((FAILOVER_KILL_AT - 2))
  probe_loop "$eps" "$base-probe.txt" "$WORK/probe.stop" &
  PROBE_PID=$!
  sleep 2
  local t_kill pid=${CLUSTER_PIDS[$old]}
  t_kill=$(date +%s.%N)
  kill -9 "$pid"
  wait "$pid" 2>/dev/null || true
  CLUSTER_PIDS[$old]=""
  wait "$BENCH_PID" || log "failover $run against $kind: ferro-bench failed (see $base-load.json)"
  BENCH_PID=""
  touch "$WORK/probe.stop"
  wait "$PROBE_PID" || true
  PROBE_PID=""
  local new="none"
  if find_leader "${survivors[@]}"; then new=${CLUSTER_NAMES[$LEADER]}; fi
  {
    echo "kind $kind"
    echo "load_start $t_start"
    echo "kill $t_kill"
    echo "killed_leader ${CLUSTER_NAMES[$old]}"
    echo "new_leader $new"
    echo "probe_timeout $PROBE_TIMEOUT"
  } >"$base-kill.txt"
  echo "failover-$run $kind start $la0 end $(loadavg)" >>"$OUT/raw/loadavg.txt"
  check_members "$kind" "failover-$run"
  stop_cluster
}

wait_quiet
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "topology: three members on 127.0.0.1 (one machine), ferrokv --shards $SHARDS"
  echo "host: $(uname -srm)"
  echo "cpu: $(lscpu | sed -n 's/^Model name: *//p') x $(nproc) (nproc)"
  echo "memory: $(free -h | awk '/^Mem:/{print $2}')"
  echo "data dirs: $WORK ($(findmnt -no SOURCE,FSTYPE --target "$WORK"))"
  echo "etcd: $("$ETCD" --version | head -1), $("$ETCD" --version | grep -i 'go version')"
  echo "ferrokv: $(git -C "$SRC" describe --always --dirty 2>/dev/null || cat "$SRC/COMMIT" 2>/dev/null || echo unknown) (built in $SRC, release)"
  echo "rustc: $(rustc --version)"
  echo "duration: $DURATION, warmup: $WARMUP, total bound: $TOTAL"
  echo "quiet before the runs: $QUIET"
  echo "load average at the start: $(loadavg)"
} >"$OUT/machine.txt"

RUN_START=$(date +%s)
for p in "${POINTS[@]}"; do
  name=${p%%|*}
  args=${p#*|}
  if [ -n "$ONLY" ] && [ "$ONLY" != "$name" ]; then continue; fi
  for kind in etcd ferrokv; do run_point "$name" "$args" "$kind"; done
done
if [ "$FAILOVER" = 1 ]; then
  for run in $(seq "$FAILOVER_RUNS"); do
    for kind in etcd ferrokv; do run_failover "$kind" "$run"; done
  done
fi
echo "load average at the end: $(loadavg); runs took $(($(date +%s) - RUN_START)) s" >>"$OUT/machine.txt"
log "runs took $(($(date +%s) - RUN_START)) s"

python3 "$ROOT/perf/report.py" "$OUT"
log "wrote $OUT/results.json, $OUT/results.md, $OUT/plot.svg"
