#!/usr/bin/env bash
# The PostgreSQL store against SQLite, in one run: one release receiver on SQLite, one on
# PostgreSQL, and two on one PostgreSQL database (the load split evenly: one `send` per
# receiver with half the connections, both sending for the same 1,000 patients), vitals
# scenario, send-wait-ACK, at 8 and 64 connections in all. PostgreSQL is a local server
# started here from the machine's binaries (fsync and synchronous_commit on, a fresh
# database per run). Writes $RESULTS/postgres.jsonl (one line per run; for two receivers
# also one line per receiver, "part": 1 or 2) and prints a table.
#
# For two receivers msg/s is the sum of both senders' and the latencies are the worse of
# the two senders' percentiles (an upper bound of the combined ones).
#
# Where the time goes on the PostgreSQL side ($RESULTS/postgres-diag.txt): this disk's
# fsync rate (pg_test_fsync), and after each PostgreSQL run the WAL statistics
# (pg_stat_wal: records, bytes, writes, syncs and their time) and, when the machine's
# PostgreSQL has pg_stat_statements, the statements by total execution time.
# DURATION (default 20s) per run; CONNECTIONS (default "8 64"); PATIENTS (1000);
# STORES (default "sqlite postgres postgres2").
source "$(dirname "$0")/lib.sh"
DURATION=${DURATION:-20s}
CONNECTIONS=${CONNECTIONS:-"8 64"}
PATIENTS=${PATIENTS:-1000}
STORES=${STORES:-"sqlite postgres postgres2"}
out=$RESULTS/postgres.jsonl
diag=$RESULTS/postgres-diag.txt
: >"$out"
: >"$diag"
build

pg_bin=$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)
[ -x "$pg_bin/initdb" ] || { echo "no PostgreSQL binaries in $pg_bin" >&2; exit 1; }
pg_dir=$(mktemp -d /tmp/hl7-ihp-bench-pg.XXXXXX)
as_pg=()
if [ "$(id -u)" = 0 ]; then chown postgres: "$pg_dir"; as_pg=(runuser -u postgres --); fi
chmod 700 "$pg_dir"
"${as_pg[@]}" "$pg_bin/initdb" -D "$pg_dir/data" -U postgres --auth=trust -E UTF8 --locale=C >/dev/null
pg_port=$(free_port)
pg_opts="-p $pg_port -k $pg_dir -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on"
pg_opts+=" -c max_connections=100 -c track_wal_io_timing=on -c track_io_timing=on"
stat_statements=0
if [ -f "$("$pg_bin/pg_config" --pkglibdir 2>/dev/null || echo /nonexistent)/pg_stat_statements.so" ]; then
  pg_opts+=" -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all"
  stat_statements=1
fi
"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/log" -w start -o "$pg_opts" >/dev/null
cleanup() {
  pkill -TERM -P $$ 2>/dev/null || true # receivers a failed run left
  "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -m fast stop >/dev/null 2>&1
  rm -rf "$pg_dir"
}
trap cleanup EXIT
psql() { "$pg_bin/psql" -X -q -h 127.0.0.1 -p "$pg_port" -U postgres "$@"; }

{
  echo "== pg_test_fsync (this disk, in $pg_dir) =="
  "${as_pg[@]}" "$pg_bin/pg_test_fsync" -s 2 -f "$pg_dir/fsync-test" 2>&1 | sed -n '1,25p'
} >>"$diag"

load() { # load PORT CONNECTIONS: the send summary as JSON
  "$BIN" send --to "127.0.0.1:$1" --scenario vitals --patients "$PATIENTS" \
    --connections "$2" --duration "$DURATION" --json || true # negatives are in the summary
}

# row SUMMARY CONNECTIONS STORE RECEIVERS [PART]: one JSON line.
row() {
  python3 - "$@" <<'PY'
import json, sys
s = json.loads(sys.argv[1])
s.update(server="hl7-ihp", store=sys.argv[3], connections=int(sys.argv[2]), receivers=int(sys.argv[4]))
if len(sys.argv) > 5:
    s["part"] = int(sys.argv[5])
print(json.dumps(s))
PY
}

# combine A B CONNECTIONS: two senders' summaries as one (msg/s summed, worse percentiles).
combine() {
  python3 - "$@" <<'PY'
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
s = {k: a[k] + b[k] for k in ("sent", "acknowledged", "negative", "errors", "retransmitted", "unacknowledged")}
s["seconds"] = max(a["seconds"], b["seconds"])
s["messages_per_second"] = a["messages_per_second"] + b["messages_per_second"]
s["latency_ms"] = {k: max(a["latency_ms"].get(k, 0), b["latency_ms"].get(k, 0)) for k in set(a["latency_ms"]) | set(b["latency_ms"])}
s["latency_note"] = "worse of the two senders' percentiles"
s["connections"] = int(sys.argv[3])
print(json.dumps(s))
PY
}

# diagnose LABEL DB: what PostgreSQL spent the run on, then reset its statistics.
diagnose() {
  {
    echo "== $1 =="
    psql -d "$2" -c "SELECT wal_records, wal_bytes, wal_write, wal_sync, round(wal_write_time) AS write_ms, round(wal_sync_time) AS sync_ms FROM pg_stat_wal"
    psql -d "$2" -c "SELECT xact_commit, xact_rollback, blks_read, blks_hit FROM pg_stat_database WHERE datname = '$2'"
    if [ "$stat_statements" = 1 ]; then
      psql -d "$2" -c "SELECT calls, round(total_exec_time) AS total_ms, round(mean_exec_time::numeric, 3) AS mean_ms, rows, left(regexp_replace(query, '\s+', ' ', 'g'), 90) AS query FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 12"
    fi
  } >>"$diag" 2>&1
}

# reset_stats DB: the WAL statistics and pg_stat_statements' from zero.
reset_stats() {
  psql -d "$1" -c "SELECT pg_stat_reset_shared('wal')" >/dev/null
  [ "$stat_statements" = 0 ] || psql -d "$1" -c "SELECT pg_stat_statements_reset()" >/dev/null
}

n=0
for c in $CONNECTIONS; do
  for store in $STORES; do
    data=$(mktemp -d)
    case $store in
      sqlite)
        mllp=$(free_port); http=$(free_port)
        start_receiver "$data/data" "$mllp" "$http"
        summary=$(load "$mllp" "$c")
        stop_receiver
        row "$summary" "$c" sqlite 1 >>"$out"
        ;;
      postgres | postgres2)
        n=$((n + 1))
        db=bench_$n
        psql -d postgres -c "CREATE DATABASE $db"
        [ "$stat_statements" = 0 ] || psql -d "$db" -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null
        flags=(--store "postgres://postgres@127.0.0.1:$pg_port/$db")
        reset_stats "$db"
        if [ "$store" = postgres ]; then
          mllp=$(free_port); http=$(free_port)
          start_receiver "$data/data" "$mllp" "$http" "${flags[@]}"
          summary=$(load "$mllp" "$c")
          stop_receiver
          row "$summary" "$c" postgres 1 >>"$out"
        else
          m1=$(free_port); h1=$(free_port); m2=$(free_port); h2=$(free_port)
          RECEIVER_LOG=$RESULTS/receiver-1.log start_receiver "$data/one" "$m1" "$h1" "${flags[@]}"
          first=$RECEIVER_PID
          RECEIVER_LOG=$RESULTS/receiver-2.log start_receiver "$data/two" "$m2" "$h2" "${flags[@]}"
          second=$RECEIVER_PID
          half=$((c / 2)); other=$((c - half))
          load "$m1" "$half" >"$data/a.json" & la=$!
          load "$m2" "$other" >"$data/b.json" & lb=$!
          wait "$la" "$lb"
          RECEIVER_PID=$first stop_receiver
          RECEIVER_PID=$second stop_receiver
          a=$(cat "$data/a.json"); b=$(cat "$data/b.json")
          row "$(combine "$a" "$b" "$c")" "$c" postgres 2 >>"$out"
          row "$a" "$half" postgres 2 1 >>"$out"
          row "$b" "$other" postgres 2 2 >>"$out"
        fi
        # Rows stored against messages acknowledged: nothing lost, nothing twice.
        echo "$store $c connections: $(psql -d "$db" -A -t -c "SELECT count(*) FROM messages") messages in $db" >>"$diag"
        diagnose "$store, $c connections" "$db"
        ;;
    esac
    rm -rf "$data"
  done
done
python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print(f"{'store':<10} {'receivers':>9} {'connections':>11} {'msg/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'negative':>8} {'errors':>6}")
for r in rows:
    if "part" in r:
        continue
    lat = r.get("latency_ms", {})
    print(f"{r['store']:<10} {r.get('receivers', 1):>9} {r['connections']:>11} {r['messages_per_second']:>8.0f} "
          f"{lat.get('p50', 0):>7.2f} {lat.get('p99', 0):>7.2f} {r['negative']:>8} {r['errors']:>6}")
PY
echo "PostgreSQL diagnostics: $diag"
