#!/usr/bin/env bash
# RSS of the receiver with 1,000 idle connections open.
source "$(dirname "$0")/lib.sh"
N=${N:-1000}
build
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
data=$(mktemp -d)
mllp=$(free_port); http=$(free_port)
start_receiver "$data/data" "$mllp" "$http"
python3 "$ROOT/bench/peers/hold_connections.py" "$mllp" "$N" "$RECEIVER_PID" "$http" | tee "$RESULTS/idle.json"
stop_receiver
rm -rf "$data"
