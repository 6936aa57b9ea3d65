#!/usr/bin/env bash
# A first look at the PostgreSQL store's throughput: one release receiver on SQLite and one on
# PostgreSQL (a local server started here from the machine's binaries, fsync and
# synchronous_commit on, a fresh database per run), vitals scenario, 1,000 patients,
# send-wait-ACK, at 8 and 64 connections. Writes $RESULTS/postgres.jsonl and prints a table.
# DURATION (default 20s) per run. Two receivers on one database are not measured yet.
source "$(dirname "$0")/lib.sh"
DURATION=${DURATION:-20s}
CONNECTIONS=${CONNECTIONS:-"8 64"}
PATIENTS=${PATIENTS:-1000}
out=$RESULTS/postgres.jsonl
: >"$out"
build

pg_bin=$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)
[ -x "$pg_bin/initdb" ] || { echo "no PostgreSQL binaries in $pg_bin" >&2; exit 1; }
pg_dir=$(mktemp -d /tmp/hl7-ihp-bench-pg.XXXXXX)
as_pg=()
if [ "$(id -u)" = 0 ]; then chown postgres: "$pg_dir"; as_pg=(runuser -u postgres --); fi
chmod 700 "$pg_dir"
"${as_pg[@]}" "$pg_bin/initdb" -D "$pg_dir/data" -U postgres --auth=trust -E UTF8 --locale=C >/dev/null
pg_port=$(free_port)
"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/log" -w start \
  -o "-p $pg_port -k $pg_dir -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on -c max_connections=100" >/dev/null
trap '"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -m fast stop >/dev/null 2>&1; rm -rf "$pg_dir"' EXIT
psql() { "$pg_bin/psql" -X -q -h 127.0.0.1 -p "$pg_port" -U postgres "$@"; }

load() { # load PORT CONNECTIONS: the send summary as JSON
  "$BIN" send --to "127.0.0.1:$1" --scenario vitals --patients "$PATIENTS" \
    --connections "$2" --duration "$DURATION" --json
}

n=0
for c in $CONNECTIONS; do
  for store in sqlite postgres; do
    data=$(mktemp -d)
    flags=()
    if [ "$store" = postgres ]; then
      n=$((n + 1))
      psql -d postgres -c "CREATE DATABASE bench_$n"
      flags=(--store "postgres://postgres@127.0.0.1:$pg_port/bench_$n")
    fi
    mllp=$(free_port); http=$(free_port)
    start_receiver "$data/data" "$mllp" "$http" "${flags[@]}"
    summary=$(load "$mllp" "$c")
    stop_receiver
    python3 - "$summary" "$c" "$store" >>"$out" <<'PY'
import json, sys
s = json.loads(sys.argv[1])
s.update(server="hl7-ihp", store=sys.argv[3], connections=int(sys.argv[2]))
print(json.dumps(s))
PY
    rm -rf "$data"
  done
done
python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print(f"{'store':<10} {'connections':>11} {'msg/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'negative':>8} {'errors':>6}")
for r in rows:
    lat = r.get("latency_ms", {})
    print(f"{r['store']:<10} {r['connections']:>11} {r['messages_per_second']:>8.0f} "
          f"{lat.get('p50', 0):>7.2f} {lat.get('p99', 0):>7.2f} {r['negative']:>8} {r['errors']:>6}")
PY
