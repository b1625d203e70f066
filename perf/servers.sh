# Sourced by perf/run.sh, watch.sh, cluster.sh, keys.sh, stalls.sh and
# scaling.sh: start and stop
# the servers under test, a single member or a cluster. Expects ETCD,
# FERROKV, BENCH, OUT, WORK, CLIENT_PORT and a log function; RUN_PREFIX
# (default empty) prefixes data dirs and log names.

RUN_PREFIX=${RUN_PREFIX:-}
STARTS=0
SERVER_PID=""
# start_cluster: one pid, client endpoint (host:port) and name per member.
CLUSTER_PIDS=()
CLUSTER_ENDPOINTS=()
CLUSTER_NAMES=()

# stop_pids PID...: SIGTERM to each, up to 10 s to exit cleanly, then
# SIGKILL; reaps them. Only the pids given (never by process name); empty
# ones (a member already killed and reaped) are skipped.
stop_pids() {
  local pid
  local pids=()
  for pid in "$@"; do [ -n "$pid" ] && pids+=("$pid"); done
  set -- "${pids[@]}"
  [ $# -gt 0 ] || return 0
  for pid in "$@"; do kill "$pid" 2>/dev/null || true; done
  for _ in $(seq 100); do
    local alive=0
    for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 1 ] || break
    sleep 0.1
  done
  for pid in "$@"; do
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}

stop_server() {
  if [ -n "$SERVER_PID" ]; then
    stop_pids "$SERVER_PID"
    SERVER_PID=""
  fi
}

stop_cluster() {
  stop_pids "${CLUSTER_PIDS[@]}"
  CLUSTER_PIDS=()
  CLUSTER_ENDPOINTS=()
  CLUSTER_NAMES=()
}

stop_servers() {
  stop_server
  stop_cluster
}
trap stop_servers EXIT INT TERM

# next_ports N: N fresh (client, peer) port pairs from CLIENT_PORT upwards,
# in PORTS (client0 peer0 client1 peer1 ...). Fresh for every start: a
# stopped server's port sits in TIME_WAIT a while, and not every server binds
# with SO_REUSEADDR.
next_ports() {
  PORTS=()
  local i
  for i in $(seq 0 $(($1 - 1))); do
    PORTS+=("$((CLIENT_PORT + 2 * STARTS))" "$((CLIENT_PORT + 2 * STARTS + 1))")
    STARTS=$((STARTS + 1))
  done
}

# spawn_member <kind> <name> <data dir> <client port> <peer port>
# <initial cluster> <log file> [extra flags...]: starts one member on a fresh
# data dir with etcd's flags (the same for etcd and ferrokv), in the
# background; its pid in SPAWNED_PID.
spawn_member() {
  local kind=$1 name=$2 data=$3 client_port=$4 peer_port=$5 initial=$6 log_file=$7 bin
  shift 7
  case $kind in etcd) bin=$ETCD ;; ferrokv) bin=$FERROKV ;; esac
  rm -rf "$data"
  local args=(
    --name "$name" --data-dir "$data"
    --listen-client-urls "http://127.0.0.1:$client_port"
    --advertise-client-urls "http://127.0.0.1:$client_port"
    --listen-peer-urls "http://127.0.0.1:$peer_port"
    --initial-advertise-peer-urls "http://127.0.0.1:$peer_port"
    --initial-cluster "$initial"
  )
  [ "$kind" = etcd ] && args+=(--logger zap --log-level warn)
  env -u ETCD_DATA_DIR "$bin" "${args[@]}" "$@" >"$log_file" 2>&1 &
  SPAWNED_PID=$!
}

# start_server etcd|ferrokv <run name> [extra flags...]: a single member on
# a fresh data dir and fresh ports; waits until a serializable range
# succeeds (bounded: 30 tries of 1 s).
start_server() {
  local kind=$1 name=$2
  shift 2
  local log_file=$OUT/raw/$RUN_PREFIX$name-$kind.log
  next_ports 1
  ENDPOINT=127.0.0.1:${PORTS[0]}
  spawn_member "$kind" perf "$WORK/$RUN_PREFIX$kind-data" "${PORTS[0]}" "${PORTS[1]}" \
    "perf=http://127.0.0.1:${PORTS[1]}" "$log_file" "$@"
  SERVER_PID=$SPAWNED_PID
  for _ in $(seq 30); do
    if "$BENCH" range --endpoints "$ENDPOINT" --total 1 --preload 0 --consistency s \
      --timeout 1s --dial-timeout 1s --no-progress >/dev/null 2>&1; then
      return 0
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || { log "$kind exited; see $log_file"; return 1; }
    sleep 1
  done
  log "$kind not ready after 30 s"; return 1
}

# start_cluster etcd|ferrokv <run name> <members> [extra flags...]: members
# m1..mN started together (a member is healthy only once a quorum runs), each
# on a fresh data dir $WORK/<prefix><kind>-m<i> and fresh ports, with
# --initial-cluster-token and --initial-cluster-state new; logs in
# $OUT/raw/<prefix><run name>-<kind>-m<i>.log. Waits until every member
# answers `etcdctl endpoint health` (a quorum read: needs a leader), bounded
# by 30 s. Sets CLUSTER_PIDS, CLUSTER_ENDPOINTS, CLUSTER_NAMES.
start_cluster() {
  local kind=$1 name=$2 n=$3 i initial=""
  shift 3
  next_ports "$n"
  for i in $(seq 0 $((n - 1))); do
    initial+="${initial:+,}m$((i + 1))=http://127.0.0.1:${PORTS[$((2 * i + 1))]}"
  done
  for i in $(seq 0 $((n - 1))); do
    local m=m$((i + 1))
    spawn_member "$kind" "$m" "$WORK/$RUN_PREFIX$kind-$m" "${PORTS[$((2 * i))]}" \
      "${PORTS[$((2 * i + 1))]}" "$initial" "$OUT/raw/$RUN_PREFIX$name-$kind-$m.log" \
      --initial-cluster-token "perf-$kind-$name" --initial-cluster-state new "$@"
    CLUSTER_PIDS+=("$SPAWNED_PID")
    CLUSTER_ENDPOINTS+=("127.0.0.1:${PORTS[$((2 * i))]}")
    CLUSTER_NAMES+=("$m")
  done
  local all
  all=$(IFS=,; echo "${CLUSTER_ENDPOINTS[*]}")
  for _ in $(seq 30); do
    if etcdctl --endpoints "$all" --dial-timeout 1s --command-timeout 2s \
      endpoint health >/dev/null 2>&1; then
      return 0
    fi
    for i in "${!CLUSTER_PIDS[@]}"; do
      kill -0 "${CLUSTER_PIDS[$i]}" 2>/dev/null ||
        { log "$kind ${CLUSTER_NAMES[$i]} exited; see $OUT/raw/$RUN_PREFIX$name-$kind-${CLUSTER_NAMES[$i]}.log"; return 1; }
    done
    sleep 1
  done
  log "$kind cluster not healthy after 30 s"; return 1
}
