#!/usr/bin/env bash
# The dashboard's first paint with PATIENTS patients (200): a receiver holding each patient's
# admission and HISTORY vitals messages, the simulator sending each patient a message a
# second while headless Chromium opens the ward RUNS times, each in a fresh browser context
# (bench/dashboard.py: first contentful paint, all tiles in the DOM, painted). Screenshots
# of the ward go to bench/results/.
source "$(dirname "$0")/lib.sh"
PATIENTS=${PATIENTS:-200}
HISTORY=${HISTORY:-60}
RUNS=${RUNS:-5}
build
data=$(mktemp -d)
mllp=$(free_port); http=$(free_port)
start_receiver "$data/data" "$mllp" "$http"
cleanup() {
  [ -n "${FEED_PID:-}" ] && kill "$FEED_PID" 2>/dev/null && wait "$FEED_PID" 2>/dev/null
  stop_receiver
  rm -rf "$data"
}
trap cleanup EXIT
echo "== history: $PATIENTS patients, $HISTORY vitals messages each"
"$BIN" send --to "127.0.0.1:$mllp" --scenario vitals --patients "$PATIENTS" --connections 8 \
  --count $((PATIENTS * (HISTORY + 1))) --json >"$RESULTS/dashboard-history.json"
echo "== live feed: one message a second per patient"
"$BIN" send --to "127.0.0.1:$mllp" --scenario vitals --patients "$PATIENTS" --connections 4 \
  --rate "$PATIENTS" >/dev/null 2>&1 &
FEED_PID=$!
python3 "$ROOT/bench/dashboard.py" "http://127.0.0.1:$http" --patients "$PATIENTS" --runs "$RUNS" \
  --screenshots "$RESULTS" --json "$RESULTS/dashboard.json" | tee "$RESULTS/dashboard.txt"
