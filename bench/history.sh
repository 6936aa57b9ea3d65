#!/usr/bin/env bash
# Per-message cost when a patient already holds 100,000 records vs an empty store: the
# seed scenario (the prototype's messages, all for one patient, one OBX each) at 64
# connections, first on an empty store, then after 100,000 records were stored.
source "$(dirname "$0")/lib.sh"
DURATION=${DURATION:-15s}
RECORDS=${RECORDS:-100000}
build
run() { "$BIN" send --to "127.0.0.1:$1" --connections 64 --duration "$DURATION" --json; }
data=$(mktemp -d)
mllp=$(free_port); http=$(free_port)
start_receiver "$data/data" "$mllp" "$http"
empty=$(run "$mllp")
stop_receiver
rm -rf "$data"

data=$(mktemp -d)
start_receiver "$data/data" "$mllp" "$http"
"$BIN" send --to "127.0.0.1:$mllp" --connections 16 --count "$RECORDS" --json >/dev/null
# Let the exporter catch up so both runs start with a current file.
wait_export "$http" "$(metric "$http" hl7ihp_store_messages_total)"
full=$(run "$mllp")
stop_receiver
rm -rf "$data"
python3 - "$empty" "$full" "$RECORDS" <<'PY' | tee "$RESULTS/history.json"
import json, sys
empty, full = json.loads(sys.argv[1]), json.loads(sys.argv[2])
ratio = empty["messages_per_second"] / full["messages_per_second"]
print(json.dumps({"records_before": int(sys.argv[3]),
                  "empty_msg_s": round(empty["messages_per_second"]),
                  "full_msg_s": round(full["messages_per_second"]),
                  "empty_p50_ms": empty["latency_ms"]["p50"], "full_p50_ms": full["latency_ms"]["p50"],
                  "empty_p99_ms": empty["latency_ms"]["p99"], "full_p99_ms": full["latency_ms"]["p99"],
                  "cost_ratio": round(ratio, 3)}))
PY
