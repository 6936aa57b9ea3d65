#!/usr/bin/env bash
# The patient-file exporter at ward scale: PATIENTS bedside monitors, each sending one vitals
# ORU^R01 (7 OBX) a second over its own connection (`hl7-ihp send --scenario vitals
# --connections PATIENTS --rate PATIENTS`), onto a store prefilled with PREFILL_RECORDS
# records per patient, so the files start at their cap. Each variant runs on a copy of the
# same prefilled store:
#   off         --patient-files off: what the store alone writes and costs (the baseline)
#   json        --patient-files json: the defaults
#   json-<N>    --patient-files json --json-max-records <N>
#   ndjson      --patient-files ndjson
#   both        --patient-files both (staleness of the JSON files; the NDJSON's in the JSON line)
# and EXTRA_FLAGS on every receiver (the prefill's too).
#
# Per variant: once the exporter has caught up with the prefilled history
# (hl7ihp_export_lag_messages{output=...} 0 and a file per patient), the receiver's
# /proc/PID/io write_bytes and CPU time (utime+stime) around the load, and the files'
# staleness polled from outside every POLL_INTERVAL: each time a file's newest record's
# Timestamp advances from T_old to T_new, one arrival per whole second s in (T_old, T_new]
# with latency = the time the poller first saw it - s. The simulator sets the observation
# time to the send time in whole seconds, so this overestimates the delay after the ACK by up
# to one second; the load starts on a whole second, so the monitors send early in theirs and
# the overestimate is mostly the sender's start-up. The same arrivals are also timed from
# when the store received each one (messages.received_ms; `after_receipt_*` in the JSON
# line). The load's first second (the ADT admits) and its last do not count. The
# bytes received are the stored MLLP payloads (length(raw)) of the ids stored in the window,
# read from the SQLite store read-only. Write bytes and CPU are read again TAIL seconds after
# the load, so the files' deferred writes of the last messages count; CPU is given as % of
# one core over the load's length.
#
# Writes $RESULTS/export.jsonl (one JSON line per variant), $RESULTS/export-<variant>.log
# (each receiver's log) and prints a Markdown table. Settings:
#   PATIENTS (200)          monitors, one connection each, one message a second each
#   DURATION (60s)          the load per variant (`s` or `m`)
#   VARIANTS ("off json json-10000 ndjson")
#   PREFILL_RECORDS (10000) records per patient before the load (ceil(N/7) messages each)
#   PREFILL_CONNECTIONS (64) at most this many connections for the prefill, as fast as it goes
#   PREFILL_DIR ("")        reuse this prefilled data directory (made by an earlier run with
#                           KEEP=1) instead of prefilling
#   EXTRA_FLAGS ("")        more `hl7-ihp receive` flags for every receiver
#   CATCH_UP_TIMEOUT (600)  seconds to wait for the exporter to catch up with the history
#   SETTLE (5)              seconds between catching up and the load
#   TAIL (5)                seconds after the load before the second reading
#   POLL_INTERVAL (0.1)     seconds between the poller's sweeps over the files
#   WORK (a new temporary directory)  where the data directories go (about 2.5 KB per
#                           message each, the prefill plus one copy at a time)
#   KEEP (0)                1: keep WORK (the prefilled store included) at the end
source "$(dirname "$0")/lib.sh"
PATIENTS=${PATIENTS:-200}
DURATION=${DURATION:-60s}
VARIANTS=${VARIANTS:-"off json json-10000 ndjson"}
PREFILL_RECORDS=${PREFILL_RECORDS:-10000}
PREFILL_CONNECTIONS=${PREFILL_CONNECTIONS:-64}
PREFILL_DIR=${PREFILL_DIR:-}
EXTRA_FLAGS=${EXTRA_FLAGS:-}
CATCH_UP_TIMEOUT=${CATCH_UP_TIMEOUT:-600}
SETTLE=${SETTLE:-5}
TAIL=${TAIL:-5}
POLL_INTERVAL=${POLL_INTERVAL:-0.1}
KEEP=${KEEP:-0}
PROBE="python3 $ROOT/bench/export_probe.py"
out=$RESULTS/export.jsonl

case $DURATION in
  *m) seconds=$(( ${DURATION%m} * 60 )) ;;
  *s) seconds=${DURATION%s} ;;
  *) seconds=$DURATION ;;
esac
[[ $seconds =~ ^[0-9]+$ && $seconds -ge 5 ]] || { echo "DURATION: whole seconds or minutes, at least 5s" >&2; exit 2; }

# variant_flags VARIANT: sets FLAGS, OUTPUTS (comma-separated) and CAP.
variant_flags() {
  case $1 in
    off) FLAGS="--patient-files off"; OUTPUTS=""; CAP="" ;;
    json) FLAGS="--patient-files json"; OUTPUTS=json; CAP=$DEFAULT_CAP ;;
    ndjson) FLAGS="--patient-files ndjson"; OUTPUTS=ndjson; CAP="" ;;
    both) FLAGS="--patient-files both"; OUTPUTS=json,ndjson; CAP=$DEFAULT_CAP ;;
    *)
      if [[ $1 =~ ^(json|both)-([0-9]+)$ ]]; then
        FLAGS="--patient-files ${BASH_REMATCH[1]} --json-max-records ${BASH_REMATCH[2]}"
        OUTPUTS=$([ "${BASH_REMATCH[1]}" = json ] && echo json || echo json,ndjson)
        CAP=${BASH_REMATCH[2]}
        if [ "$CAP" = 0 ]; then CAP=all; fi
      else
        echo "unknown variant '$1' (off, json, json-<N>, ndjson, both, both-<N>)" >&2; exit 2
      fi ;;
  esac
}
DEFAULT_CAP=""
for v in $VARIANTS; do variant_flags "$v"; done # every name checked before the long part

build
help=$("$BIN" receive --help)
# The default cap, as the binary says it.
DEFAULT_CAP=$(printf '%s\n' "$help" | python3 -c '
import re, sys
m = re.search(r"--json-max-records <N>\s+.*?\[default: (\d+)\]", sys.stdin.read(), re.S)
print(m.group(1) if m else "")')
if [ "$DEFAULT_CAP" = 0 ]; then DEFAULT_CAP=all; fi
if ! grep -q -- --patient-files <<<"$help"; then
  echo "note: this hl7-ihp has no --patient-files; the prefill keeps its JSON files on" >&2
  PREFILL_FLAGS=()
else
  PREFILL_FLAGS=(--patient-files off)
fi
read -r -a EXTRA <<<"$EXTRA_FLAGS"

WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/hl7ihp-export.XXXXXX")}
mkdir -p "$WORK"
RECEIVER_PID=""; POLLER_PID=""; SENDER_PID=""
cleanup() {
  local code=$?
  for pid in $SENDER_PID $POLLER_PID; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  if [ -n "$RECEIVER_PID" ]; then stop_receiver; fi
  for pid in $SENDER_PID $POLLER_PID; do
    timeout 10 tail --pid="$pid" -f /dev/null 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  done
  if [ "$KEEP" = 1 ]; then
    echo "kept $WORK" >&2
  else
    rm -rf "$WORK"
  fi
  exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
since() { python3 -c "import time; print(round(time.time() - $1, 1))"; }

# lag_of HTTP OUTPUT DATA_DIR: messages the output's files are behind; from the watermark and
# the store's last id when the binary has no hl7ihp_export_lag_messages; "missing" when it
# has neither.
lag_of() {
  local lag
  lag=$(metric "$1" "hl7ihp_export_lag_messages{output=\"$2\"}" missing)
  if [ "$lag" = missing ]; then
    local mark
    mark=$(metric "$1" "hl7ihp_export_watermark{output=\"$2\"}" missing)
    # Before the outputs had labels there was one watermark, the JSON files'.
    [ "$mark" = missing ] && [ "$2" = json ] && mark=$(metric "$1" hl7ihp_export_watermark missing)
    [ "$mark" = missing ] && { echo missing; return; }
    lag=$(( $($PROBE maxid "$3") - mark ))
  fi
  echo "$lag"
}

# wait_caught_up HTTP OUTPUTS DIR: until every output's lag is 0 and every patient has a
# file, twice in a row; CATCH_UP_TIMEOUT at most. Sets CAUGHT_UP (true/false) and CATCH_UP_S.
wait_caught_up() {
  local http=$1 outputs=$2 dir=$3 started ok_twice=0 last_print=0 missing_since="" o
  started=$(now)
  CAUGHT_UP=false
  while :; do
    local line="" done=1 elapsed
    elapsed=$(since "$started")
    for o in ${outputs//,/ }; do
      local lag lag_s files
      lag=$(lag_of "$http" "$o" "$dir")
      lag_s=$(metric "$http" "hl7ihp_export_lag_seconds{output=\"$o\"}" "?")
      files=$(find "$dir" -name "patient_*.$o" -not -name '.tmp-*' 2>/dev/null | wc -l)
      line+=" $o: $lag messages behind (${lag_s} s), $files/$PATIENTS files;"
      if [ "$lag" = missing ]; then
        done=0
        [ -z "$missing_since" ] && missing_since=$(now)
        if python3 -c "import sys,time; sys.exit(time.time() - $missing_since < 60)"; then
          echo "  no lag metric for $o after 60 s; /metrics has:" >&2
          curl -s "http://127.0.0.1:$http/metrics" | grep -i export >&2 || true
          return 1
        fi
      elif [ "$lag" != 0 ] || [ "$files" -lt "$PATIENTS" ]; then
        done=0
      fi
    done
    if [ "$done" = 1 ]; then
      ok_twice=$((ok_twice + 1))
      if [ "$ok_twice" -ge 2 ]; then
        CAUGHT_UP=true; CATCH_UP_S=$elapsed
        echo "  caught up after ${elapsed} s:$line"
        return 0
      fi
    else
      ok_twice=0
    fi
    if python3 -c "import sys; sys.exit(not $elapsed - $last_print >= 10)"; then
      echo "  ${elapsed} s:$line"
      last_print=$elapsed
    fi
    if python3 -c "import sys; sys.exit(not $elapsed >= $CATCH_UP_TIMEOUT)"; then
      echo "  NOT caught up after $CATCH_UP_TIMEOUT s:$line (measuring anyway)" >&2
      CATCH_UP_S=$elapsed
      return 0
    fi
    sleep 1
  done
}

# ---- 1. the prefilled store --------------------------------------------------------------
per_patient=$(( (PREFILL_RECORDS + 6) / 7 ))
if [ -n "$PREFILL_DIR" ]; then
  prefill=$PREFILL_DIR
  echo "== prefilled store: $prefill (reused)"
else
  prefill=$WORK/prefill
  # Connections that divide PATIENTS: each connection cycles through the same number of
  # monitors, so --count gives every patient the same number of messages (an ADT admit first).
  conns=$PREFILL_CONNECTIONS
  [ "$conns" -gt "$PATIENTS" ] && conns=$PATIENTS
  while [ $((PATIENTS % conns)) -ne 0 ]; do conns=$((conns - 1)); done
  total=$(( PATIENTS * (per_patient + 1) ))
  echo "== prefill: $PATIENTS patients x $per_patient vitals messages ($total messages, $conns connections)"
  mllp=$(free_port); http=$(free_port)
  RECEIVER_LOG=$RESULTS/export-prefill.log \
    start_receiver "$prefill" "$mllp" "$http" "${PREFILL_FLAGS[@]}" "${EXTRA[@]}"
  started=$(now)
  timeout --signal=TERM 3600 "$BIN" send --to "127.0.0.1:$mllp" --scenario vitals \
    --patients "$PATIENTS" --connections "$conns" --count "$total" --json \
    >"$RESULTS/export-prefill.json" &
  SENDER_PID=$!
  ticks=0
  while kill -0 "$SENDER_PID" 2>/dev/null; do
    sleep 1; ticks=$((ticks + 1))
    if [ $((ticks % 10)) = 0 ] && kill -0 "$SENDER_PID" 2>/dev/null; then
      echo "  $(since "$started") s: $(metric "$http" hl7ihp_store_messages_total)/$total stored"
    fi
  done
  wait "$SENDER_PID" || echo "  the prefill's sender exited with $?" >&2
  SENDER_PID=""
  echo "  $(since "$started") s: $(cat "$RESULTS/export-prefill.json")"
  stop_receiver; RECEIVER_PID=""
fi
counts=$($PROBE store "$prefill")
echo "  store: $counts"
python3 - "$counts" "$PATIENTS" "$per_patient" <<'PY'
import json, sys
c, patients, need = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
if c["patients"] < patients or c["min"] < need:
    sys.exit(f"the prefilled store has {c['patients']} patients with at least {c['min']} "
             f"vitals messages each, not {patients} with {need}")
PY

# ---- 2. the variants ---------------------------------------------------------------------
: >"$out"
for v in $VARIANTS; do
  variant_flags "$v"
  echo "== $v: $FLAGS ${EXTRA_FLAGS}"
  dir=$WORK/$v
  rm -rf "$dir"
  cp -a "$prefill" "$dir"
  # On disk before the receiver starts: the copy's writeback would otherwise stall the
  # store's fsyncs during the first seconds (the `off` run, with no catch-up to wait for,
  # measured its ACK p99 at 250 ms that way).
  timeout 600 find "$dir" -type f -exec sync {} +
  mllp=$(free_port); http=$(free_port)
  log=$RESULTS/export-$v.log
  # shellcheck disable=SC2086
  RECEIVER_LOG=$log start_receiver "$dir" "$mllp" "$http" $FLAGS "${EXTRA[@]}"
  CAUGHT_UP=null; CATCH_UP_S=null
  if [ -n "$OUTPUTS" ]; then wait_caught_up "$http" "$OUTPUTS" "$dir"; fi
  sleep "$SETTLE"
  load_before=$(cut -d' ' -f1-3 /proc/loadavg)

  raw=$WORK/$v-poll.json; ready=$WORK/$v-poll.ready
  rm -f "$ready"
  $PROBE poll "$dir" "$OUTPUTS" "$PATIENTS" "$raw" "$ready" "$POLL_INTERVAL" &
  POLLER_PID=$!
  for _ in $(seq 1 600); do [ -e "$ready" ] && break; sleep 0.1; done
  [ -e "$ready" ] || { echo "the poller did not start" >&2; exit 1; }

  before=$($PROBE proc "$RECEIVER_PID")
  # Start on a whole second: every monitor then sends early in its second, and the
  # observation second (the send time, rounded down) is close to the send time.
  python3 -c 'import time; time.sleep(1 - time.time() % 1)'
  t0=$(now)
  summary=$(timeout --signal=TERM $((seconds + 180)) "$BIN" send --to "127.0.0.1:$mllp" \
    --scenario vitals --patients "$PATIENTS" --connections "$PATIENTS" --rate "$PATIENTS" \
    --duration "${seconds}s" --json) || echo "  the sender exited with $?" >&2
  [ -n "$summary" ] || { echo "the sender printed no summary" >&2; exit 1; }
  at_end=$($PROBE proc "$RECEIVER_PID")
  sleep "$TAIL"
  after=$($PROBE proc "$RECEIVER_PID")
  lags=""
  for o in ${OUTPUTS//,/ }; do lags+=" $o $(lag_of "$http" "$o" "$dir")"; done

  kill -TERM "$POLLER_PID"
  timeout 60 tail --pid="$POLLER_PID" -f /dev/null || { echo "the poller did not stop" >&2; exit 1; }
  wait "$POLLER_PID" || true
  POLLER_PID=""
  stop_receiver; RECEIVER_PID=""
  sizes=$($PROBE sizes "$dir")
  staleness=$($PROBE summarise "$raw" "$t0" "$seconds")
  errors=$(grep -cE ' (ERROR|WARN) ' "$log" || true)
  $PROBE row variant="$v" flags="$FLAGS${EXTRA_FLAGS:+ $EXTRA_FLAGS}" cap="$CAP" patients="$PATIENTS" \
    duration_s="$seconds" prefill_records="$PREFILL_RECORDS" \
    caught_up="$CAUGHT_UP" catch_up_s="$CATCH_UP_S" lag_after_tail="${lags# }" \
    summary="$summary" before="$before" at_end="$at_end" after="$after" \
    staleness="$staleness" file_bytes_avg="$sizes" log_warnings_errors="$errors" \
    loadavg_before="$load_before" loadavg_after="$(cut -d' ' -f1-3 /proc/loadavg)" \
    started_at="$(date -u -d "@${t0%.*}" +%FT%TZ)" | tee -a "$out"
  if [ "$errors" != 0 ]; then echo "  $errors WARN/ERROR lines in $log" >&2; fi
  rm -rf "$dir"
done

echo
$PROBE report "$out"
