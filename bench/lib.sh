# Shared helpers of the benchmark scripts (sourced, not run). Everything talks to 127.0.0.1.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The cargo target directory: CARGO_TARGET_DIR when set (relative to the repository, where
# build runs cargo), else target/.
TARGET_DIR=${CARGO_TARGET_DIR:-target}
case $TARGET_DIR in /*) ;; *) TARGET_DIR=$ROOT/$TARGET_DIR ;; esac
BIN=$TARGET_DIR/release/hl7-ihp
RESULTS=${RESULTS:-$ROOT/bench/results}
mkdir -p "$RESULTS"

build() {
  (cd "$ROOT" && cargo build --release --quiet -p hl7-ihp)
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_port PORT: until something listens on 127.0.0.1:PORT (30 s at most).
wait_port() {
  for _ in $(seq 1 300); do
    if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$1),0.2).close()" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2
  return 1
}

# start_receiver DATA_DIR MLLP_PORT HTTP_PORT [FLAGS...]: sets RECEIVER_PID.
start_receiver() {
  local dir=$1 mllp=$2 http=$3
  shift 3
  "$BIN" receive --listen "127.0.0.1:$mllp" --http "127.0.0.1:$http" --data-dir "$dir" "$@" \
    2>"$RESULTS/receiver.log" &
  RECEIVER_PID=$!
  wait_port "$mllp"
}

stop_receiver() {
  kill -TERM "$RECEIVER_PID" 2>/dev/null || true
  wait "$RECEIVER_PID" 2>/dev/null || true
}

# rss_kb PID: resident set size now, in KiB.
rss_kb() {
  awk '/^VmRSS:/ {print $2}' "/proc/$1/status"
}

# hwm_kb PID: peak resident set size, in KiB.
hwm_kb() {
  awk '/^VmHWM:/ {print $2}' "/proc/$1/status"
}

# metric HTTP_PORT NAME: one value from /metrics.
metric() {
  python3 - "$1" "$2" <<'PY'
import sys, urllib.request
port, name = sys.argv[1], sys.argv[2]
text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
for line in text.splitlines():
    if line.startswith(name + " "):
        print(line.split()[1]); break
else:
    print(0)
PY
}

# wait_export HTTP_PORT LAST: until the JSON files hold every message up to id LAST (the
# exporter's watermark), 10 minutes at most.
wait_export() {
  for _ in $(seq 1 6000); do
    [ "$(metric "$1" 'hl7ihp_export_watermark{output="json"}')" -ge "$2" ] && return 0
    sleep 0.1
  done
  echo "the JSON files did not catch up" >&2
}
