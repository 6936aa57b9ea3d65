#!/usr/bin/env bash
# MLLP over TLS beside plain MLLP in the same run: msg/s and ACK latency at 1, 8 and 64
# connections (vitals scenario, 1,000 patients, send-wait-ACK, durable store), mutual TLS
# with a client certificate, one receiver per connection count listening on both; then new
# TLS handshakes a second (`openssl s_time -new`, full handshakes with the client
# certificate, one at a time). Certificates made here with the openssl CLI (ECDSA P-256).
# Writes $RESULTS/tls.jsonl, one JSON line per run. DURATION (default 20s) per run.
source "$(dirname "$0")/lib.sh"
DURATION=${DURATION:-20s}
CONNECTIONS=${CONNECTIONS:-"1 8 64"}
PATIENTS=${PATIENTS:-1000}
HANDSHAKE_SECONDS=${HANDSHAKE_SECONDS:-10}
out=$RESULTS/tls.jsonl
: >"$out"
build

pki=$(mktemp -d)
trap 'rm -rf "$pki"' EXIT
# make_cert NAME SUBJECT EXTENSIONS: a P-256 key and a certificate signed by the CA.
make_cert() {
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "$2" \
    -keyout "$pki/$1.key" -out "$pki/$1.csr" 2>/dev/null
  printf '%b' "$3" >"$pki/$1.ext"
  openssl x509 -req -in "$pki/$1.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 2 -sha256 -extfile "$pki/$1.ext" -out "$pki/$1.pem" 2>/dev/null
}
openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -sha256 \
  -subj "/O=hl7-ihp bench/CN=bench CA" -keyout "$pki/ca.key" -out "$pki/ca.pem" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  2>/dev/null
make_cert server "/CN=hl7-ihp bench" \
  "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1"
make_cert device "/O=hl7-ihp bench/CN=bench-monitor" \
  "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth"

load() { # load PORT CONNECTIONS [TLS FLAGS...]: the send summary as JSON
  local port=$1 c=$2
  shift 2
  "$BIN" send --to "127.0.0.1:$port" --scenario vitals --patients "$PATIENTS" \
    --connections "$c" --duration "$DURATION" --json "$@"
}
tls_flags=(--tls --tls-ca "$pki/ca.pem" --tls-cert "$pki/device.pem" --tls-key "$pki/device.key")

record() { # record SUMMARY TRANSPORT CONNECTIONS
  python3 - "$@" >>"$out" <<'PY'
import json, sys
s = json.loads(sys.argv[1])
s.update(server="hl7-ihp", transport=sys.argv[2], connections=int(sys.argv[3]))
print(json.dumps(s))
PY
}

start_both() { # start_both DATA: a receiver on $mllp (plain) and $tls (mutual TLS)
  mllp=$(free_port); http=$(free_port); tls=$(free_port)
  start_receiver "$1" "$mllp" "$http" --listen-tls "127.0.0.1:$tls" \
    --tls-cert "$pki/server.pem" --tls-key "$pki/server.key" --tls-client-ca "$pki/ca.pem"
  wait_port "$tls"
}

# Plain first, then TLS, on the same receiver: TLS runs on the store plain's run filled, which
# if anything counts against TLS.
for c in $CONNECTIONS; do
  data=$(mktemp -d)
  start_both "$data/data"
  record "$(load "$mllp" "$c")" plain "$c"
  record "$(load "$tls" "$c" "${tls_flags[@]}")" tls "$c"
  stop_receiver
  # A negative ACK is a result to explain, not to average over: show what the store says.
  "$BIN" messages --data-dir "$data/data" --limit 0 | awk 'NR > 1 && !/ accepted /' | head -3 >&2
  rm -rf "$data"
done

# Handshakes: openssl's client makes a full handshake (no resumption: -new) with the client
# certificate, closes, and again, for HANDSHAKE_SECONDS, once with TLS 1.3 (what
# `hl7-ihp send` negotiates) and once with TLS 1.2. The receiver's counts say how many it
# completed: with TLS 1.3 the client is done first and closes at once, and some of its
# connections are reset before the receiver has read the client's last handshake message,
# which the receiver counts as a failed handshake although it did the work (the
# certificate checked, the keys agreed).
data=$(mktemp -d)
start_both "$data/data"
for version in 1_3 1_2; do
  completed=$(metric "$http" hl7ihp_tls_handshakes_total)
  failed=$(metric "$http" hl7ihp_tls_handshake_failures_total)
  s_time=$(openssl s_time -connect "127.0.0.1:$tls" -new -time "$HANDSHAKE_SECONDS" "-tls$version" \
    -cert "$pki/device.pem" -key "$pki/device.key" -CAfile "$pki/ca.pem" 2>&1 || true)
  python3 - "$s_time" "$version" "$completed" "$(metric "$http" hl7ihp_tls_handshakes_total)" \
    "$failed" "$(metric "$http" hl7ihp_tls_handshake_failures_total)" >>"$out" <<'PY'
import json, re, sys
text, version, completed0, completed1, failed0, failed1 = sys.argv[1:]
m = re.search(r"(\d+) connections in (\d+) real seconds", text)
if not m:
    sys.exit("openssl s_time printed no result:\n" + text)
n, real = int(m.group(1)), int(m.group(2))
print(json.dumps(dict(server="hl7-ihp", transport="tls-handshakes", connections=1,
                      tls_version="TLS " + version.replace("_", "."), handshakes=n,
                      real_seconds=real, handshakes_per_second=n / max(real, 1),
                      receiver_completed=int(float(completed1)) - int(float(completed0)),
                      receiver_failed=int(float(failed1)) - int(float(failed0)))))
PY
done
stop_receiver
rm -rf "$data"

python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
runs = {(r["transport"], r["connections"]): r for r in rows if "messages_per_second" in r}
print("| connections | plain msg/s | TLS msg/s | TLS / plain | plain p99 ms | TLS p99 ms | errors |")
print("|---:|---:|---:|---:|---:|---:|---:|")
for c in sorted({c for _, c in runs}):
    p, t = runs.get(("plain", c)), runs.get(("tls", c))
    if not (p and t):
        continue
    bad = sum(r["errors"] + r["negative"] + r["unacknowledged"] for r in (p, t))
    ratio = t["messages_per_second"] / p["messages_per_second"] if p["messages_per_second"] else 0
    print(f"| {c} | {p['messages_per_second']:,.0f} | {t['messages_per_second']:,.0f} | "
          f"{ratio:.0%} | {p['latency_ms']['p99']:.2f} | {t['latency_ms']['p99']:.2f} | {bad} |")
print()
for r in rows:
    if r["transport"] == "tls-handshakes":
        print(f"- new {r['tls_version']} handshakes (openssl s_time -new, mutual TLS, one at a "
              f"time): {r['handshakes_per_second']:,.0f}/s ({r['handshakes']} in "
              f"{r['real_seconds']} s; the receiver counted {r['receiver_completed']} completed, "
              f"{r['receiver_failed']} failed)")
PY
