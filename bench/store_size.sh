#!/usr/bin/env bash
# Bytes on disk per stored message: a release receiver on a fresh data directory takes
# COUNT messages of the vitals scenario (default 200,000, at CONNECTIONS=64 from
# PATIENTS=1000 patients), is stopped with SIGTERM (the WAL is checkpointed into the
# database file and truncated), and the database file's size over the number of messages
# is printed, with a breakdown per table and index (SQLite's `dbstat` table, read with
# python3's sqlite3 module, which has it; the bundled SQLite of hl7-ihp does not) and the
# load generator's rate. Writes $RESULTS/store_size.json. NO_BUILD=1 uses the binary there
# is; KEEP=1 leaves the data directory and says where.
source "$(dirname "$0")/lib.sh"
COUNT=${COUNT:-200000}
CONNECTIONS=${CONNECTIONS:-64}
PATIENTS=${PATIENTS:-1000}
build

data=$(mktemp -d)
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$data"' EXIT
mllp=$(free_port); http=$(free_port)
start_receiver "$data/data" "$mllp" "$http"
summary=$("$BIN" send --to "127.0.0.1:$mllp" --scenario vitals --patients "$PATIENTS" \
  --connections "$CONNECTIONS" --count "$COUNT" --json)
stop_receiver
[ "${KEEP:-0}" = 1 ] && echo "data directory: $data/data" >&2

python3 - "$data/data/hl7-ihp.sqlite3" "$summary" "$RESULTS/store_size.json" <<'PY'
import json, os, sqlite3, sys
path, summary, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
size = os.path.getsize(path)
wal = path + "-wal"
wal_size = os.path.getsize(wal) if os.path.exists(wal) else 0
db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
n = db.execute("SELECT count(*) FROM messages").fetchone()[0]
page_size = db.execute("PRAGMA page_size").fetchone()[0]
free = db.execute("PRAGMA freelist_count").fetchone()[0] * page_size
rows = db.execute(
    "SELECT name, sum(pgsize), sum(payload), sum(unused), count(*) FROM dbstat "
    "GROUP BY name ORDER BY sum(pgsize) DESC").fetchall()
raw = db.execute("SELECT avg(length(raw)) FROM messages").fetchone()[0] or 0
obs = db.execute("SELECT avg(length(observations)) FROM messages").fetchone()[0] or 0
print(f"{n} messages, {size} bytes ({size / 2**20:.1f} MiB, page size {page_size}, "
      f"WAL left {wal_size} bytes, free pages {free} bytes)")
print(f"bytes per message: {size / max(n, 1):.0f}")
print(f"average stored raw column {raw:.0f} bytes, observations column {obs:.0f} bytes")
print(f"{'table or index':<28} {'bytes/msg':>10} {'payload/msg':>12} {'unused/msg':>11} {'pages':>8}")
breakdown = {}
for name, pgsize, payload, unused, pages in rows:
    per = lambda x: (x or 0) / max(n, 1)
    breakdown[name] = dict(bytes_per_message=round(per(pgsize), 1),
                           payload_per_message=round(per(payload), 1), pages=pages)
    print(f"{name:<28} {per(pgsize):>10.1f} {per(payload):>12.1f} {per(unused):>11.1f} {pages:>8}")
rate = summary.get("messages_per_second")
print(f"load generator: {rate} msg/s")
result = dict(messages=n, file_bytes=size, bytes_per_message=round(size / max(n, 1), 1),
              page_size=page_size, avg_raw_column=round(raw, 1),
              avg_observations_column=round(obs, 1), tables=breakdown, send=summary)
with open(out, "w") as f:
    json.dump(result, f, indent=1)
PY
