#!/bin/sh
# `hl7-ihp backup` against a receiver under load: the senders' ACK rate without a backup,
# then with one running, and the backup's time and size. Usage:
#   bench/backup.sh [BINARY]   (default target/release/hl7-ihp; build with --release)
# Fills a fresh data directory with 120,000 vitals messages (about 490 MB) first.
set -eu
bin=${1:-target/release/hl7-ihp}
dir=$(mktemp -d)
port=25751
trap 'kill "$receiver" 2>/dev/null; rm -rf "$dir"' EXIT
"$bin" receive --data-dir "$dir/data" --listen 127.0.0.1:$port --http off >"$dir/receive.log" 2>&1 &
receiver=$!
sleep 1
load() {
    "$bin" send --to 127.0.0.1:$port --connections 16 --scenario vitals --patients 200 \
        --count "$1" --json
}
rate() { sed 's/.*"messages_per_second":\([0-9]*\).*/\1 msg\/s/'; }
load 120000 >/dev/null
echo "store: $(du -m "$dir/data/hl7-ihp.sqlite3" | cut -f1) MB"
echo "without a backup: $(load 60000 | rate)"
load 60000 >"$dir/during.json" &
sender=$!
sleep 1
/usr/bin/time -f "backup: %e s wall, %U s user, %S s system" \
    "$bin" backup --data-dir "$dir/data" --force "$dir/copy.sqlite3" 2>&1 | grep -v '%'
wait "$sender"
echo "during the backup: $(rate <"$dir/during.json")"
