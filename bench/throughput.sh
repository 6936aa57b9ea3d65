#!/usr/bin/env bash
# Receiver throughput and ACK latency at 1, 8 and 64 connections (vitals scenario, 1,000
# patients, send-wait-ACK, durable store), the same load against python-hl7's and Medplum's
# MLLP servers (parse and ACK only, no storage), RSS under load, and the JSON export lag.
# Writes $RESULTS/throughput.jsonl, one JSON line per run. DURATION (default 20s) per run.
source "$(dirname "$0")/lib.sh"
DURATION=${DURATION:-20s}
CONNECTIONS=${CONNECTIONS:-"1 8 64"}
PATIENTS=${PATIENTS:-1000}
PEERS=${PEERS:-"python-hl7 medplum"}
out=$RESULTS/throughput.jsonl
: >"$out"
build
# The peers only when some are asked for (PEERS=" " measures hl7-ihp alone).
if [ -n "${PEERS// /}" ]; then bash "$ROOT/bench/peers/install.sh"; fi

load() { # load PORT CONNECTIONS: the send summary as JSON
  "$BIN" send --to "127.0.0.1:$1" --scenario vitals --patients "$PATIENTS" \
    --connections "$2" --duration "$DURATION" --json
}

for c in $CONNECTIONS; do
  data=$(mktemp -d)
  mllp=$(free_port); http=$(free_port)
  start_receiver "$data/data" "$mllp" "$http"
  summary=$(load "$mllp" "$c")
  rss=$(rss_kb "$RECEIVER_PID"); peak=$(hwm_kb "$RECEIVER_PID")
  # Export lag: from the end of the load until every message is in the JSON files.
  last=$(metric "$http" hl7ihp_store_messages_total)
  lag_start=$(date +%s.%N)
  lag_behind=$(( last - $(metric "$http" 'hl7ihp_export_watermark{output="json"}') ))
  wait_export "$http" "$last"
  lag=$(python3 -c "import time; print(round(time.time() - $lag_start, 2))")
  stop_receiver
  python3 - "$summary" "$c" "$rss" "$peak" "$lag" "$lag_behind" >>"$out" <<'PY'
import json, sys
s = json.loads(sys.argv[1])
s.update(server="hl7-ihp", connections=int(sys.argv[2]), rss_mb=int(sys.argv[3]) / 1024,
         peak_rss_mb=int(sys.argv[4]) / 1024, export_catch_up_s=float(sys.argv[5]),
         export_behind_messages=int(sys.argv[6]))
print(json.dumps(s))
PY
  rm -rf "$data"
done

for peer in $PEERS; do
  for c in $CONNECTIONS; do
    port=$(free_port)
    case $peer in
      python-hl7) python3 "$ROOT/bench/peers/python_hl7_server.py" "$port" >/dev/null & ;;
      medplum) (cd "$ROOT/bench/peers" && exec node medplum_server.mjs "$port") >/dev/null & ;;
    esac
    pid=$!
    wait_port "$port"
    summary=$(load "$port" "$c")
    rss=$(rss_kb "$pid")
    kill "$pid"; wait "$pid" 2>/dev/null || true
    python3 - "$summary" "$c" "$peer" "$rss" >>"$out" <<'PY'
import json, sys
s = json.loads(sys.argv[1])
s.update(server=sys.argv[3], connections=int(sys.argv[2]), rss_mb=int(sys.argv[4]) / 1024)
print(json.dumps(s))
PY
  done
done
python3 "$ROOT/bench/report.py" "$out"
