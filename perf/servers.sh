# Sourced by perf/run.sh and perf/watch.sh: start and stop one server under
# test. Expects ETCD, FERROKV, BENCH, OUT, WORK, CLIENT_PORT and a log
# function; RUN_PREFIX (default empty) prefixes data dirs and log names.

RUN_PREFIX=${RUN_PREFIX:-}
STARTS=0
SERVER_PID=""

stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    # Give it 10 s to exit cleanly, then SIGKILL.
    for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
  fi
}
trap stop_server EXIT INT TERM

# start_server etcd|ferrokv <run name>: fresh data dir and fresh ports (base
# + 2 x start number: a stopped server's port sits in TIME_WAIT a while, and
# not every server binds with SO_REUSEADDR); waits until a serializable
# range succeeds (bounded: 30 tries of 1 s).
start_server() {
  local kind=$1 name=$2 bin
  case $kind in etcd) bin=$ETCD ;; ferrokv) bin=$FERROKV ;; esac
  local data=$WORK/$RUN_PREFIX$kind-data
  local log_file=$OUT/raw/$RUN_PREFIX$name-$kind.log
  local client_port=$((CLIENT_PORT + 2 * STARTS)) peer_port=$((CLIENT_PORT + 2 * STARTS + 1))
  STARTS=$((STARTS + 1))
  ENDPOINT=127.0.0.1:$client_port
  rm -rf "$data"
  local args=(
    --name perf --data-dir "$data"
    --listen-client-urls "http://$ENDPOINT" --advertise-client-urls "http://$ENDPOINT"
    --listen-peer-urls "http://127.0.0.1:$peer_port"
    --initial-advertise-peer-urls "http://127.0.0.1:$peer_port"
    --initial-cluster "perf=http://127.0.0.1:$peer_port"
  )
  [ "$kind" = etcd ] && args+=(--logger zap --log-level warn)
  env -u ETCD_DATA_DIR "$bin" "${args[@]}" >"$log_file" 2>&1 &
  SERVER_PID=$!
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
