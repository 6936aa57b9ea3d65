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

# build: the release binary; NO_BUILD=1 uses the one there is.
build() {
  [ "${NO_BUILD:-0}" = 1 ] && return 0
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

# start_receiver DATA_DIR MLLP_PORT HTTP_PORT [FLAGS...]: sets RECEIVER_PID. The log goes to
# RECEIVER_LOG (default $RESULTS/receiver.log).
start_receiver() {
  local dir=$1 mllp=$2 http=$3
  shift 3
  "$BIN" receive --listen "127.0.0.1:$mllp" --http "127.0.0.1:$http" --data-dir "$dir" "$@" \
    2>"${RECEIVER_LOG:-$RESULTS/receiver.log}" &
  RECEIVER_PID=$!
  wait_port "$mllp"
}

# stop_receiver: SIGTERM, then SIGKILL if it is still running after STOP_TIMEOUT seconds
# (default 120).
stop_receiver() {
  kill -TERM "$RECEIVER_PID" 2>/dev/null || true
  local waited=0
  while kill -0 "$RECEIVER_PID" 2>/dev/null && [ "$waited" -lt "$(( ${STOP_TIMEOUT:-120} * 10 ))" ]; do
    sleep 0.1; waited=$((waited + 1))
  done
  if kill -0 "$RECEIVER_PID" 2>/dev/null; then
    echo "the receiver did not stop within ${STOP_TIMEOUT:-120} s of SIGTERM: killed" >&2
    kill -KILL "$RECEIVER_PID" 2>/dev/null || true
  fi
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

# metric HTTP_PORT NAME [DEFAULT]: one value from /metrics, DEFAULT (0) when it is absent.
# NAME may carry labels, `hl7ihp_export_lag_messages{output="json"}`: a series matches when
# it has that name and at least those labels, in any order (so a NAME without labels takes
# the first series of that name, whatever its labels).
metric() {
  python3 - "$1" "$2" "${3:-0}" <<'PY'
import re, sys, urllib.request
port, wanted, default = sys.argv[1], sys.argv[2], sys.argv[3]
series = re.compile(r'([A-Za-z_:][A-Za-z0-9_:]*)(?:\{([^}]*)\})?\s+(\S+)')
label = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"')
m = series.fullmatch(wanted + " x")
name, labels = m.group(1), dict(label.findall(m.group(2) or ""))
text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
for line in text.splitlines():
    m = series.match(line)
    if m and m.group(1) == name and labels.items() <= dict(label.findall(m.group(2) or "")).items():
        print(m.group(3)); break
else:
    print(default)
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
