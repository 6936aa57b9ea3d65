#!/usr/bin/env bash
# Two hl7-ihp receivers behind HAProxy (PROXY protocol v2, /healthz checks) on one
# PostgreSQL, all on 127.0.0.1, from this machine's binaries: a PostgreSQL in a temporary
# folder (fsync and synchronous_commit on; as the `postgres` user when run as root, since
# initdb refuses root), two `hl7-ihp receive --store postgres://… --proxy-protocol-from
# 127.0.0.1`, and `haproxy -f deploy/postgres/haproxy.cfg`. It sends the three prototype
# messages through HAProxy twice (the second time as a device's retransmission would) and
# shows that each is stored once. Everything stops, and the folder goes, on exit or Ctrl-C.
#
#   deploy/postgres/run.sh           the demonstration, then stop
#   deploy/postgres/run.sh --wait    the same, then keep running until Ctrl-C
#
# HL7IHP (the hl7-ihp binary; default: on the PATH, else target/release or target/debug),
# PG_BIN (PostgreSQL's binaries; default `pg_config --bindir`, else Debian's newest
# /usr/lib/postgresql/*/bin) and HAPROXY (default: on the PATH, else /usr/sbin/haproxy).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WAIT=0
case "${1:-}" in
  --wait) WAIT=1 ;;
  "") ;;
  *) echo "usage: $0 [--wait]" >&2; exit 2 ;;
esac

# --- the binaries -----------------------------------------------------------------------
if [ -z "${HL7IHP:-}" ]; then
  HL7IHP=$(command -v hl7-ihp || true)
  for candidate in "${CARGO_TARGET_DIR:-$ROOT/target}/release/hl7-ihp" "${CARGO_TARGET_DIR:-$ROOT/target}/debug/hl7-ihp"; do
    [ -n "$HL7IHP" ] || { [ -x "$candidate" ] && HL7IHP=$candidate; } || true
  done
fi
[ -n "${HL7IHP:-}" ] && [ -x "$HL7IHP" ] || { echo "no hl7-ihp binary: cargo build --release, or set HL7IHP" >&2; exit 1; }
if [ -z "${PG_BIN:-}" ]; then
  PG_BIN=$(pg_config --bindir 2>/dev/null || true)
  [ -x "$PG_BIN/initdb" ] || PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
fi
[ -x "$PG_BIN/initdb" ] && [ -x "$PG_BIN/pg_ctl" ] || { echo "no PostgreSQL binaries (initdb, pg_ctl); set PG_BIN" >&2; exit 1; }
HAPROXY=${HAPROXY:-$(command -v haproxy || echo /usr/sbin/haproxy)}
[ -x "$HAPROXY" ] || { echo "no haproxy binary; set HAPROXY" >&2; exit 1; }
command -v python3 >/dev/null || { echo "python3 is needed (free ports, the stats socket)" >&2; exit 1; }

# --- the folder, and stopping everything --------------------------------------------------
WORK=$(mktemp -d /tmp/hl7-ihp-deploy-pg.XXXXXX)
chmod 755 "$WORK"
as_pg=()
if [ "$(id -u)" = 0 ]; then as_pg=(runuser -u postgres --); fi
PIDS=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  if [ -f "$WORK/pg/data/postmaster.pid" ]; then
    "${as_pg[@]}" "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
# wait_for WHAT COMMAND…: until COMMAND succeeds, 60 s at most.
wait_for() {
  local what=$1; shift
  for _ in $(seq 1 600); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "timed out waiting for $what" >&2
  return 1
}
listening() { python3 -c "import socket; socket.create_connection(('127.0.0.1',$1),0.5).close()"; }
healthy() { python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$1/healthz', timeout=2)"; }
# stats COMMAND: HAProxy's admin socket.
stats() {
  python3 - "$WORK/haproxy.sock" "$1" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\n"); out = b""
while chunk := s.recv(65536): out += chunk
print(out.decode())
PY
}
both_up() { [ "$(stats "show stat" | grep -c '^hl7_ihp_mllp,rcv[12],.*,UP,')" = 2 ]; }

# --- PostgreSQL ---------------------------------------------------------------------------
mkdir -m 700 "$WORK/pg"
[ "${#as_pg[@]}" = 0 ] || chown postgres: "$WORK/pg"
"${as_pg[@]}" "$PG_BIN/initdb" -D "$WORK/pg/data" -U postgres --auth=trust -E UTF8 --locale=C >/dev/null
PG_PORT=$(free_port)
"${as_pg[@]}" "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/log" -w start -o \
  "-p $PG_PORT -k $WORK/pg -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on" >/dev/null
psql() { "$PG_BIN/psql" -X -q -A -t -h 127.0.0.1 -p "$PG_PORT" -U postgres "$@"; }
psql -d postgres -c "CREATE DATABASE hl7"
STORE="postgres://postgres@127.0.0.1:$PG_PORT/hl7"
echo "PostgreSQL on 127.0.0.1:$PG_PORT (data in $WORK/pg)"

# --- two receivers on it ------------------------------------------------------------------
# The first creates the schema; the second finds it.
for n in 1 2; do
  mllp=$(free_port); http=$(free_port)
  "$HL7IHP" receive --listen "127.0.0.1:$mllp" --http "127.0.0.1:$http" \
    --data-dir "$WORK/rcv$n" --store "$STORE" --proxy-protocol-from 127.0.0.1/32 \
    2>"$WORK/rcv$n.log" &
  PIDS+=($!)
  wait_for "receiver $n" listening "$mllp"
  wait_for "receiver $n's /healthz" healthy "$http"
  declare "RCV${n}_MLLP=127.0.0.1:$mllp" "RCV${n}_HTTP_PORT=$http"
  echo "receiver $n: MLLP 127.0.0.1:$mllp, HTTP 127.0.0.1:$http (log $WORK/rcv$n.log)"
done

# --- HAProxy in front -----------------------------------------------------------------------
FRONT_PORT=$(free_port)
FRONT=127.0.0.1:$FRONT_PORT STATS_SOCKET=$WORK/haproxy.sock \
  RCV1_MLLP=$RCV1_MLLP RCV1_HTTP_PORT=$RCV1_HTTP_PORT \
  RCV2_MLLP=$RCV2_MLLP RCV2_HTTP_PORT=$RCV2_HTTP_PORT \
  "$HAPROXY" -db -f "$ROOT/deploy/postgres/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
PIDS+=($!)
wait_for "HAProxy to see both receivers UP" both_up || { cat "$WORK/haproxy.log" >&2; exit 1; }
echo "HAProxy on 127.0.0.1:$FRONT_PORT, both receivers UP"

# --- the prototype's three messages, twice ------------------------------------------------
files=("$ROOT"/samples/prototype-{1,2,3}.hl7)
for round in 1 2; do
  echo "sending the three prototype messages through HAProxy (round $round)"
  "$HL7IHP" send --to "127.0.0.1:$FRONT_PORT" --count 3 --interval 0ms --file "${files[@]}"
done
"$HL7IHP" messages --store "$STORE"
n_stored=$(psql -d hl7 -c "SELECT count(*) FROM messages")
peers=$(psql -d hl7 -c "SELECT DISTINCT peer FROM messages")
echo "sent 6 (3 messages, each twice), stored once: $n_stored messages; peer as stored: $peers"
if [ "$n_stored" != 3 ]; then
  echo "expected 3 messages stored, found $n_stored" >&2
  exit 1
fi

if [ "$WAIT" = 1 ]; then
  echo "running; devices connect to 127.0.0.1:$FRONT_PORT, the store is $STORE. Ctrl-C stops everything."
  # `wait` (not a plain sleep) so that the trap runs at once on a signal to this shell.
  while :; do sleep 3600 & PIDS+=($!); wait "$!"; done
fi
