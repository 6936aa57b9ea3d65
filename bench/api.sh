#!/usr/bin/env bash
# The HTTP API under load (issue 9's speed targets), through the real binary on 127.0.0.1:
# 1. with 1,000 patients and 1,000 msg/s arriving (vitals, `hl7-ihp send`), the delay from a
#    probe message's ACK to its `observation` event on an event-stream client, and the
#    latency of GET /api/v1/patients (bench/api_probe.py latency);
# 2. a 24 h trend at 60 s buckets of one patient with a vitals message a second of
#    observation time (86,400 messages, 604,800 records);
# 3. ingest throughput at 64 connections with HTTP off (no live view), with HTTP on, and with
#    an event-stream client and the dashboard (headless Chromium, when installed) connected,
#    PAIRS alternating rounds.
# Writes $RESULTS/api.jsonl. Settings: DURATION (30s), RATE (1000), PATIENTS (1000), PAIRS (3),
# LOAD_DURATION (20s), HOURS (24), PHASES ("1 2 3").
# In 3 the watchers run under `nice -n 19`: on this 2-core machine the browser and the
# event-stream client share the receiver's cores, and what is measured is what serving them
# costs the receiver, not what rendering costs the browser (which runs elsewhere in a ward).
source "$(dirname "$0")/lib.sh"
DURATION=${DURATION:-30s}
RATE=${RATE:-1000}
PATIENTS=${PATIENTS:-1000}
PAIRS=${PAIRS:-3}
LOAD_DURATION=${LOAD_DURATION:-20s}
HOURS=${HOURS:-24}
PHASES=${PHASES:-"1 2 3"}
PROBE="python3 $ROOT/bench/api_probe.py"
out=$RESULTS/api.jsonl
: >"$out"
build
seconds=${DURATION%s}

tag() { # tag JSON KEY=VALUE...: the JSON line with more keys
  python3 - "$@" <<'PY'
import json, sys
doc = json.loads(sys.argv[1])
for pair in sys.argv[2:]:
    key, _, value = pair.partition("=")
    doc[key] = value
print(json.dumps(doc))
PY
}

if [[ " $PHASES " == *" 1 "* ]]; then
echo "== 1. event delay and GET /api/v1/patients at $RATE msg/s over $PATIENTS patients"
data=$(mktemp -d); mllp=$(free_port); http=$(free_port)
start_receiver "$data/data" "$mllp" "$http"
"$BIN" send --to "127.0.0.1:$mllp" --scenario vitals --patients "$PATIENTS" --connections 16 \
  --rate "$RATE" --duration "$((seconds + 15))s" --json >"$RESULTS/api-load.json" &
load=$!
# Every patient has a first message before measuring.
for _ in $(seq 1 300); do
  [ "$(metric "$http" hl7ihp_store_messages_total)" -ge "$PATIENTS" ] && break
  sleep 0.1
done
result=$($PROBE latency "$mllp" "$http" "$seconds")
wait "$load"
tag "$result" phase=live rate="$RATE" patients="$PATIENTS" \
  load="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["messages_per_second"])' "$RESULTS/api-load.json" 2>/dev/null || echo '?')" \
  | tee -a "$out"
stop_receiver; rm -rf "$data"

fi

if [[ " $PHASES " == *" 2 "* ]]; then
echo "== 2. a ${HOURS} h trend at 60 s buckets"
data=$(mktemp -d); mllp=$(free_port); http=$(free_port)
start_receiver "$data/data" "$mllp" "$http"
$PROBE fill "$mllp" "$HOURS"
tag "$($PROBE trends "$http" 20)" phase=trends hours="$HOURS" | tee -a "$out"
stop_receiver; rm -rf "$data"

fi

if [[ " $PHASES " == *" 3 "* ]]; then
echo "== 3. ingest at 64 connections, alone and with an event-stream client and the dashboard"
chromium=$(command -v chromium || true)
for pair in $(seq 1 "$PAIRS"); do
  for watched in off no yes; do
    data=$(mktemp -d); mllp=$(free_port); http=$(free_port)
    if [ "$watched" = off ]; then
      # No HTTP side, so no live view: what the live view itself costs.
      "$BIN" receive --listen "127.0.0.1:$mllp" --http off --data-dir "$data/data" \
        2>"$RESULTS/receiver.log" &
      RECEIVER_PID=$!
      wait_port "$mllp"
    else
      start_receiver "$data/data" "$mllp" "$http"
    fi
    pids=()
    if [ "$watched" = yes ]; then
      nice -n 19 $PROBE sse "$http" "$(( ${LOAD_DURATION%s} + 5 ))" >/dev/null &
      pids+=($!)
      if [ -n "$chromium" ]; then
        nice -n 19 "$chromium" --headless --no-sandbox --disable-gpu --remote-debugging-port=0 \
          --user-data-dir="$data/chromium" "http://127.0.0.1:$http/" >/dev/null 2>&1 &
        pids+=($!)
      fi
      sleep 2
    fi
    summary=$("$BIN" send --to "127.0.0.1:$mllp" --scenario vitals --patients "$PATIENTS" \
      --connections 64 --duration "$LOAD_DURATION" --json)
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    tag "$summary" phase=ingest watched="$watched" pair="$pair" \
      dashboard="$([ -n "$chromium" ] && echo yes || echo no)" | tee -a "$out"
    stop_receiver; rm -rf "$data"
  done
done
fi

python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
for r in rows:
    if r["phase"] == "live":
        print(f"event delay after ACK: p50 {r['event_p50_ms']} ms, p99 {r['event_p99_ms']} ms, "
              f"max {r['event_max_ms']} ms over {r['probes']} probes ({r['events_missing']} missing); "
              f"GET /api/v1/patients: p50 {r['patients_p50_ms']} ms, p99 {r['patients_p99_ms']} ms "
              f"with {r['patients']} patients at {r['load']} msg/s")
    if r["phase"] == "trends":
        print(f"{r['hours']} h trend, 60 s buckets, {r['values_summarised']} values: "
              f"p50 {r['trend_p50_ms']} ms, max {r['trend_max_ms']} ms")
off = [r["messages_per_second"] for r in rows if r["phase"] == "ingest" and r["watched"] == "off"]
alone = [r["messages_per_second"] for r in rows if r["phase"] == "ingest" and r["watched"] == "no"]
if off and alone:
    o, a = statistics.mean(off), statistics.mean(alone)
    print(f"ingest at 64 connections: {o:.0f} msg/s with --http off, {a:.0f} msg/s with HTTP "
          f"and its live view ({(a - o) / o * 100:+.1f}%), mean of {len(off)} rounds")
watched = [r["messages_per_second"] for r in rows if r["phase"] == "ingest" and r["watched"] == "yes"]
if alone and watched:
    a, w = statistics.mean(alone), statistics.mean(watched)
    print(f"ingest at 64 connections: {a:.0f} msg/s alone, {w:.0f} msg/s watched "
          f"({(w - a) / a * 100:+.1f}%), mean of {len(alone)} pairs")
PY
