#!/usr/bin/env python3
"""Probes of the HTTP API under load, for bench/api.sh (standard library only, 127.0.0.1).

  api_probe.py latency MLLP HTTP SECONDS   ACK -> event-stream latency of probe messages,
                                           and GET /api/v1/patients latency, while the
                                           caller's load runs; one JSON line
  api_probe.py fill MLLP HOURS             one patient, one vitals message a second of
                                           observation time over the last HOURS, sent
                                           as fast as the receiver answers
  api_probe.py trends HTTP N               N times a 24 h trend at 60 s buckets of the
                                           filled patient; one JSON line
  api_probe.py sse HTTP SECONDS            an event-stream client that reads everything
                                           for SECONDS (the bench's connected client)
"""

import json
import socket
import sys
import threading
import time
import urllib.request
from datetime import datetime, timedelta, timezone

START, END = b"\x0b", b"\x1c\x0d"
VITALS = [  # code, refid, units, containment, value
    ("147842", "MDC_ECG_HEART_RATE", "264864^MDC_DIM_BEAT_PER_MIN^MDC", "1.1.1.1", 72),
    ("150456", "MDC_PULS_OXIM_SAT_O2", "262688^MDC_DIM_PERCENT^MDC", "1.2.1.1", 97),
    ("151562", "MDC_RESP_RATE", "264928^MDC_DIM_RESP_PER_MIN^MDC", "1.3.1.1", 16),
    ("150021", "MDC_PRESS_BLD_NONINV_SYS", "266016^MDC_DIM_MMHG^MDC", "1.4.1.1", 120),
    ("150022", "MDC_PRESS_BLD_NONINV_DIA", "266016^MDC_DIM_MMHG^MDC", "1.4.1.2", 80),
    ("150023", "MDC_PRESS_BLD_NONINV_MEAN", "266016^MDC_DIM_MMHG^MDC", "1.4.1.3", 93),
    ("150344", "MDC_TEMP", "268192^MDC_DIM_DEGC^MDC", "1.5.1.1", 36.8),
]
TREND_PATIENT = "TREND-1"


def hl7_time(t):
    return t.strftime("%Y%m%d%H%M%S") + "+0000"


def message(control_id, patient, observed, variation=0):
    stamp = hl7_time(observed)
    segments = [
        f"MSH|^~\\&|PROBE|ICU|HL7IHP|IHP|{stamp}||ORU^R01^ORU_R01|{control_id}|P|2.6",
        f"PID|||{patient}^^^^MR||Probe^{patient}||19500101|F",
        "PV1||I|PROBE^01^A",
        f"OBR|1|{control_id}||182777000^monitoring of patient^SCT|||{stamp}",
    ]
    for i, (code, refid, units, sub, value) in enumerate(VITALS, 1):
        v = value + (variation % 7) - 3 if isinstance(value, int) else value
        segments.append(
            f"OBX|{i}|NM|{code}^{refid}^MDC|{sub}|{v}|{units}|||||F|||{stamp}"
        )
    return ("\r".join(segments) + "\r").encode()


class Link:
    """One MLLP connection, send and wait for the ACK."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buffer = b""

    def send(self, payload):
        self.sock.sendall(START + payload + END)
        while END not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the receiver closed the connection")
            self.buffer += chunk
        ack, _, self.buffer = self.buffer.partition(END)
        if b"MSA|AA" not in ack and b"MSA|CA" not in ack:
            raise RuntimeError("negative ACK: " + ack.decode(errors="replace")[:200])


def get(port, path, timeout=30):
    started = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        body = r.read()
    return time.perf_counter() - started, body


def events(port, on_event, stop):
    """Reads the event stream until `stop` is set, calling on_event(name, data, t)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(
        # HTTP/1.0: the body is the bytes until the close, without chunk framing.
        b"GET /api/v1/events HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
    )
    buffer, name, data, in_body = b"", None, [], False
    while not stop.is_set():
        try:
            chunk = sock.recv(262144)
        except socket.timeout:
            continue
        if not chunk:
            break
        now = time.perf_counter()
        buffer += chunk
        if not in_body:
            if b"\r\n\r\n" not in buffer:
                continue
            _, _, buffer = buffer.partition(b"\r\n\r\n")
            in_body = True
        *lines, buffer = buffer.split(b"\n")
        for raw in lines:
            line = raw.rstrip(b"\r").decode(errors="replace")
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
            elif line == "":
                if name is not None or data:
                    on_event(name, "\n".join(data), now)
                name, data = None, []
    sock.close()


def percentile(values, p):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def latency(mllp, http, seconds):
    acked, seen = {}, {}
    lock = threading.Lock()
    stop = threading.Event()

    def on_event(name, data, t):
        if name != "observation":
            return
        try:
            patient = json.loads(data).get("patient")
        except ValueError:
            return
        if patient and patient.startswith("PROBE-"):
            with lock:
                seen.setdefault(patient, t)

    reader = threading.Thread(target=events, args=(http, on_event, stop), daemon=True)
    reader.start()
    time.sleep(1.0)  # the stream's headers; a probe sent before would be missed, not late
    link = Link(mllp)
    get_times = []
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        n += 1
        patient = f"PROBE-{n}"
        link.send(message(f"P{n}", patient, datetime.now(timezone.utc)))
        with lock:
            acked[patient] = time.perf_counter()
        took, _ = get(http, "/api/v1/patients")
        get_times.append(took)
        time.sleep(0.1)
    # Late events: up to 5 s more.
    until = time.monotonic() + 5
    while time.monotonic() < until:
        with lock:
            if all(p in seen for p in acked):
                break
        time.sleep(0.05)
    stop.set()
    with lock:
        delays = [max(0.0, seen[p] - acked[p]) for p in acked if p in seen]
        missing = [p for p in acked if p not in seen]
    ms = lambda v: None if v is None else round(v * 1000, 1)
    print(json.dumps({
        "probes": len(acked), "events_missing": len(missing),
        "event_p50_ms": ms(percentile(delays, 50)), "event_p99_ms": ms(percentile(delays, 99)),
        "event_max_ms": ms(max(delays) if delays else None),
        "patients_requests": len(get_times),
        "patients_p50_ms": ms(percentile(get_times, 50)),
        "patients_p99_ms": ms(percentile(get_times, 99)),
    }))


def fill(mllp, hours, connections=8):
    now = datetime.now(timezone.utc).replace(microsecond=0)
    total = int(hours * 3600)
    per = (total + connections - 1) // connections

    def worker(k):
        link = Link(mllp)
        for i in range(k * per, min(total, (k + 1) * per)):
            observed = now - timedelta(seconds=total - i)
            link.send(message(f"T{i}", TREND_PATIENT, observed, i))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(connections)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"filled_messages": total, "seconds": round(time.monotonic() - started, 1)}))


def trends(http, n):
    until = datetime.now(timezone.utc) + timedelta(minutes=1)
    since = until - timedelta(hours=24, minutes=1)
    fmt = lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")
    path = (f"/api/v1/patients/{TREND_PATIENT}/trends?since={fmt(since)}"
            f"&until={fmt(until)}&bucket=60s")
    times, body = [], b""
    for _ in range(n):
        took, body = get(http, path, timeout=60)
        times.append(took)
    doc = json.loads(body)
    counts = sum(b["count"] for s in doc["series"] for b in s["buckets"])
    ms = lambda v: round(v * 1000, 1)
    print(json.dumps({
        "requests": n, "values_summarised": counts, "series": len(doc["series"]),
        "trend_p50_ms": ms(percentile(times, 50)), "trend_max_ms": ms(max(times)),
    }))


def sse(http, seconds):
    stop = threading.Event()
    count = [0]

    def on_event(name, data, t):
        count[0] += 1

    reader = threading.Thread(target=events, args=(http, on_event, stop), daemon=True)
    reader.start()
    time.sleep(seconds)
    stop.set()
    print(json.dumps({"events_read": count[0]}))


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "latency":
        latency(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
    elif mode == "fill":
        fill(int(sys.argv[2]), float(sys.argv[3]))
    elif mode == "trends":
        trends(int(sys.argv[2]), int(sys.argv[3]))
    elif mode == "sse":
        sse(int(sys.argv[2]), float(sys.argv[3]))
    else:
        sys.exit(__doc__)
