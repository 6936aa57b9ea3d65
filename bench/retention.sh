#!/usr/bin/env bash
# Retention: ingest msg/s at 64 connections while the purger removes messages as fast as
# they arrive, against the same load without retention, and the database's size over time
# under a steady rate with retention on (it must level off: freed pages are reused).
#
# Throughput: each mode fills a fresh store for FILL (default 20s), then measures over
# MEASURE (default 20s). With --retention RETENTION (default 20s) the measured run is the
# one during which everything the fill stored ages out and is purged.
# Size: a steady RATE (default 2000 msg/s, 16 connections) for SIZE_RUN (default 90s) with
# --retention SIZE_RETENTION (default 15s); the size of the database file and its WAL every
# 5 s. EXTRA_FLAGS go to every receiver (e.g. `--patient-files off`: no export bound, the
# purge's own cost). Writes $RESULTS/retention.jsonl.
source "$(dirname "$0")/lib.sh"
FILL=${FILL:-20s}
MEASURE=${MEASURE:-20s}
RETENTION=${RETENTION:-20s}
PATIENTS=${PATIENTS:-1000}
RATE=${RATE:-2000}
SIZE_RUN=${SIZE_RUN:-90}
SIZE_RETENTION=${SIZE_RETENTION:-15s}
out=$RESULTS/retention.jsonl
: >"$out"
build

load() { # load PORT CONNECTIONS DURATION [FLAGS...]: the send summary as JSON
  local port=$1 connections=$2 duration=$3
  shift 3
  "$BIN" send --to "127.0.0.1:$port" --scenario vitals --patients "$PATIENTS" \
    --connections "$connections" --duration "$duration" --json "$@"
}

size_mb() { # size_mb DATA_DIR: database and WAL, MB
  du -cm "$1/hl7-ihp.sqlite3" "$1/hl7-ihp.sqlite3-wal" 2>/dev/null | tail -1 | cut -f1
}

for mode in off on; do
  data=$(mktemp -d)
  mllp=$(free_port); http=$(free_port)
  # shellcheck disable=SC2206
  flags=(${EXTRA_FLAGS:-})
  [ "$mode" = on ] && flags+=(--retention "$RETENTION")
  start_receiver "$data/data" "$mllp" "$http" "${flags[@]}"
  load "$mllp" 64 "$FILL" >/dev/null
  before=$(metric "$http" hl7ihp_purged_messages_total)
  summary=$(load "$mllp" 64 "$MEASURE")
  purged=$(( $(metric "$http" hl7ihp_purged_messages_total) - before ))
  held=$(metric "$http" hl7ihp_purge_held_back_messages)
  size=$(size_mb "$data/data")
  stop_receiver
  python3 - "$summary" "$mode" "$purged" "$held" "$size" >>"$out" <<'PY'
import json, sys
s = json.loads(sys.argv[1])
s.update(bench="retention-throughput", retention=sys.argv[2], connections=64,
         purged_during_run=int(sys.argv[3]), held_back_at_end=int(sys.argv[4]),
         store_mb=int(sys.argv[5]))
print(json.dumps(s))
PY
  echo "retention $mode: $(tail -1 "$out")"
  rm -rf "$data"
done

# The size over time under a steady rate.
data=$(mktemp -d)
mllp=$(free_port); http=$(free_port)
# shellcheck disable=SC2086
start_receiver "$data/data" "$mllp" "$http" --retention "$SIZE_RETENTION" ${EXTRA_FLAGS:-}
load "$mllp" 16 "${SIZE_RUN}s" --rate "$RATE" >"$data/steady.json" &
sender=$!
started=$(date +%s)
while [ $(( $(date +%s) - started )) -lt "$SIZE_RUN" ]; do
  sleep 5
  python3 - "$(( $(date +%s) - started ))" "$data/data" "$(metric "$http" hl7ihp_store_messages_total)" \
    "$(metric "$http" hl7ihp_purged_messages_total)" >>"$out" <<'PY'
import json, os, sqlite3, sys
t, data, stored, purged = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
db = os.path.join(data, "hl7-ihp.sqlite3")
size = lambda p: round(os.path.getsize(p) / 1e6, 1) if os.path.exists(p) else 0
conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
pages, free = (conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "freelist_count"))
print(json.dumps(dict(bench="retention-size", t_s=t, db_mb=size(db), wal_mb=size(db + "-wal"),
                      pages=pages, free_pages=free, stored=stored, purged=purged,
                      kept=stored - purged)))
PY
  tail -1 "$out"
done
wait "$sender" || true
stop_receiver
rm -rf "$data"
