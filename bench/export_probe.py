#!/usr/bin/env python3
"""Helpers of bench/export.sh (standard library only, files and 127.0.0.1 only).

  export_probe.py proc PID                  the process's write_bytes, cancelled_write_bytes
                                            (/proc/PID/io) and CPU seconds (utime+stime of
                                            /proc/PID/stat), and the whole machine's busy and
                                            steal CPU seconds (/proc/stat); one JSON line
  export_probe.py store DATA_DIR            vitals messages (with OBX) per patient in the store:
                                            min, max and total, read-only; one JSON line
  export_probe.py maxid DATA_DIR            the store's largest message id, read-only
  export_probe.py poll DATA_DIR OUTPUTS N RAW READY [INTERVAL]
                                            until SIGTERM: every INTERVAL (0.1 s) the newest
                                            record's Timestamp of every patient file of the
                                            OUTPUTS ("json,ndjson", may be empty), N files
                                            expected each; max(id) of the store before and
                                            after over one read-only connection, and the
                                            MLLP bytes stored in between. Touches READY once
                                            the first sweep is done; writes RAW (JSON) at the
                                            end
  export_probe.py summarise RAW T0 SECONDS  staleness of the files during the load that started
                                            at T0 (Unix seconds) and ran SECONDS; one JSON line
  export_probe.py sizes DATA_DIR            average bytes of the patient files at the end, by
                                            output; one JSON line
  export_probe.py row KEY=VALUE...          the result line of a variant from the measurements
                                            (values are JSON when they parse as JSON, else
                                            strings; see row())
  export_probe.py report JSONL              fills cpu_pct_above_off and the bytes above off into
                                            every line, rewrites JSONL, prints a Markdown table

The staleness rule (export.sh's header): each time a file's newest Timestamp advances from
T_old to T_new, one arrival per whole second s in (T_old, T_new], with latency = the time the
poller first saw it - s. The observation time has second resolution and is the send time, so
this overestimates the delay after the ACK by up to a second.
"""

import json
import math
import os
import re
import signal
import sqlite3
import sys
import time
from datetime import datetime, timezone

SUFFIX = {"json": ".json", "ndjson": ".ndjson"}
TIMESTAMP = re.compile(rb'"Timestamp"\s*:\s*"([^"]*)"')
DB_NAME = "hl7-ihp.sqlite3"


def connect_ro(data_dir):
    path = os.path.join(os.path.abspath(data_dir), DB_NAME)
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)


# ---------------------------------------------------------------------------------------
# proc, store, sizes


def proc(pid):
    io = {}
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            key, _, value = line.partition(":")
            io[key.strip()] = int(value)
    with open(f"/proc/{pid}/stat") as f:
        # The command may hold spaces and parentheses: the fields start after the last ')'.
        fields = f.read().rsplit(")", 1)[1].split()
    with open("/proc/stat") as f:
        # cpu  user nice system idle iowait irq softirq steal ...
        host = [int(v) for v in f.readline().split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    # fields[0] is field 3 (state): utime is field 14, stime field 15.
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    busy = host[0] + host[1] + host[2] + host[5] + host[6] + (host[7] if len(host) > 7 else 0)
    print(json.dumps({"t": time.time(), "write_bytes": io["write_bytes"],
                      "cancelled_write_bytes": io["cancelled_write_bytes"], "cpu_s": cpu,
                      "host_busy_s": busy / ticks,
                      "host_steal_s": (host[7] if len(host) > 7 else 0) / ticks}))


def max_id(data_dir):
    print(connect_ro(data_dir).execute("SELECT coalesce(max(id), 0) FROM messages").fetchone()[0])


def store(data_dir):
    db = connect_ro(data_dir)
    rows = db.execute(
        "SELECT count(*) FROM messages WHERE n_observations > 0 AND patient IS NOT NULL "
        "GROUP BY patient").fetchall()
    counts = [r[0] for r in rows]
    total = db.execute("SELECT count(*), coalesce(max(id), 0) FROM messages").fetchone()
    print(json.dumps({"patients": len(counts), "min": min(counts, default=0),
                      "max": max(counts, default=0), "with_obx": sum(counts),
                      "messages": total[0], "max_id": total[1]}))


def patient_files(data_dir, output):
    """The patient files of an output under DATA_DIR (any depth), temporary files left out."""
    suffix = SUFFIX[output]
    found = []
    for root, _dirs, files in os.walk(data_dir):
        for name in files:
            if name.startswith("patient_") and name.endswith(suffix):
                found.append(os.path.join(root, name))
    return sorted(found)


def key_of(path):
    """The patient key a file is named after: `patient_<key>.json` (as the simulator's ids
    are, with nothing to escape)."""
    name = os.path.basename(path)[len("patient_"):]
    return name.rsplit(".", 1)[0]


def sizes(data_dir):
    out = {}
    for output in SUFFIX:
        files = patient_files(data_dir, output)
        if files:
            total = sum(os.path.getsize(p) for p in files)
            out[output] = {"files": len(files), "avg_bytes": round(total / len(files))}
    print(json.dumps(out))


# ---------------------------------------------------------------------------------------
# poll


_seconds_cache = {}


def seconds_of(text):
    """A record's Timestamp as whole Unix seconds (a time without an offset read as UTC)."""
    value = _seconds_cache.get(text)
    if value is None:
        stamp = text[:-1] + "+00:00" if text.endswith("Z") else text
        parsed = datetime.fromisoformat(stamp)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        value = math.floor(parsed.timestamp())
        _seconds_cache[text] = value
    return value


def newest_json(f):
    """The newest record's Timestamp of a JSON file: line 2 (`{"PatientInfo":…,"Records":[`
    then the newest record a line); a pretty-printed file falls back to the first Timestamp
    after "Records"."""
    head = f.read(16384)
    first_end = head.find(b"\n")
    if first_end >= 0 and head.startswith(b'{"PatientInfo":'):
        second_end = head.find(b"\n", first_end + 1)
        line = head[first_end + 1:second_end if second_end >= 0 else len(head)].strip()
        if line.startswith(b"]"):
            return None  # no records
        try:
            return json.loads(line.rstrip(b",")).get("Timestamp")
        except ValueError:
            pass
    records = head.find(b'"Records"')
    match = TIMESTAMP.search(head, records if records >= 0 else 0)
    return match.group(1).decode() if match else None


def newest_ndjson(f, size):
    """The newest record's Timestamp of an NDJSON file: its last complete line."""
    for span in (8192, 65536, 1 << 20):
        start = max(0, size - span)
        f.seek(start)
        tail = f.read(size - start)
        end = tail.rfind(b"\n")
        if end < 0:
            if start == 0:
                return None
            continue
        begin = tail.rfind(b"\n", 0, end) + 1
        if begin == 0 and start > 0:
            continue  # the line may start before the tail
        line = tail[begin:end].strip()
        if not line:
            return None
        try:
            return json.loads(line).get("Timestamp")
        except ValueError:
            match = TIMESTAMP.search(line)
            return match.group(1).decode() if match else None
    return None


class Watched:
    def __init__(self, output):
        self.output = output
        self.files = {}  # path -> [identity, newest seconds or None]
        self.advances = []  # [time seen, T_old or None, T_new, patient key]
        self.listed = 0.0

    def sweep(self, data_dir, expected):
        now = time.time()
        if len(self.files) < expected or now - self.listed > 5:
            for path in patient_files(data_dir, self.output):
                self.files.setdefault(path, [None, None])
            self.listed = now
        for path, state in self.files.items():
            try:
                seen = time.time()
                st = os.stat(path)
                identity = (st.st_ino, st.st_size, st.st_mtime_ns)
                if identity == state[0]:
                    continue
                with open(path, "rb") as f:
                    if self.output == "json":
                        text = newest_json(f)
                    else:
                        text = newest_ndjson(f, os.fstat(f.fileno()).st_size)
                state[0] = identity
            except FileNotFoundError:
                continue
            if text is None:
                continue
            try:
                value = seconds_of(text)
            except ValueError:
                continue
            if state[1] is None or value > state[1]:
                self.advances.append([seen, state[1], value, key_of(path)])
                state[1] = value

    def oldest(self, expected):
        """The oldest newest-Timestamp over the files, None when a file is missing or empty."""
        values = [s[1] for s in self.files.values()]
        if len(values) < expected or any(v is None for v in values):
            return None
        return min(values)


def poll(data_dir, outputs, expected, raw_path, ready_path, interval=0.1):
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    db = connect_ro(data_dir)
    max_before = db.execute("SELECT coalesce(max(id), 0) FROM messages").fetchone()[0]
    watched = [Watched(o) for o in outputs]
    samples = []  # [time, {output: oldest newest-Timestamp}]
    started = time.time()
    first = True
    while not stop:
        t = time.time()
        for w in watched:
            w.sweep(data_dir, expected)
        samples.append([time.time(), {w.output: w.oldest(expected) for w in watched}])
        if first:
            # The files as they were before the load: their first "advance" is no arrival.
            for w in watched:
                w.advances.clear()
            with open(ready_path, "w") as f:
                f.write(str(time.time()))
            first = False
        pause = interval - (time.time() - t)
        if pause > 0 and not stop:
            time.sleep(pause)
    max_after = db.execute("SELECT coalesce(max(id), 0) FROM messages").fetchone()[0]
    rows, raw_bytes = db.execute(
        "SELECT count(*), coalesce(sum(length(raw)), 0) FROM messages WHERE id > ? AND id <= ?",
        (max_before, max_after)).fetchone()
    # When each patient's message of each observation second arrived (MSH-7 is the
    # observation time in the simulator's messages): the staleness after receipt.
    received = {}
    for key, second, ms in db.execute(
            "SELECT p.key, m.sent_ms / 1000, min(m.received_ms) FROM messages m "
            "JOIN patients p ON p.id = m.patient WHERE m.id > ? AND m.id <= ? "
            "AND m.n_observations > 0 AND m.sent_ms IS NOT NULL GROUP BY 1, 2",
            (max_before, max_after)):
        received.setdefault(key, {})[str(second)] = ms
    usage = os.times()
    doc = {
        "outputs": outputs, "expected": expected, "interval": interval,
        "max_id_before": max_before, "max_id_after": max_after,
        "rows": rows, "raw_bytes": raw_bytes, "received_ms": received,
        "poller_cpu_s": usage.user + usage.system, "poller_seconds": time.time() - started,
        "sweeps": len(samples),
        "samples": samples,
        "advances": {w.output: w.advances for w in watched},
        "final": {w.output: [s[1] for s in w.files.values()] for w in watched},
        "files": {w.output: len(w.files) for w in watched},
    }
    with open(raw_path, "w") as f:
        json.dump(doc, f)


# ---------------------------------------------------------------------------------------
# summarise


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[index]


def summarise(raw_path, t0, seconds):
    doc = json.load(open(raw_path))
    # The seconds that count: the load's first second holds each monitor's ADT admit (no
    # OBX), its first ORU follows a second later; the last full second before the deadline.
    s_min = math.floor(t0) + 2
    s_max = math.floor(t0 + seconds) - 1
    out = {"window": [s_min, s_max], "interval_s": doc["interval"], "sweeps": doc["sweeps"],
           "poller_cpu_pct": round(100 * doc["poller_cpu_s"] / max(doc["poller_seconds"], 1e-9), 1),
           "rows": doc["rows"], "raw_bytes": doc["raw_bytes"],
           "max_id_before": doc["max_id_before"], "max_id_after": doc["max_id_after"],
           "outputs": {}}
    for output in doc["outputs"]:
        latencies, after_receipt = [], []
        for seen, old, new, key in doc["advances"][output]:
            lo = s_min if old is None else max(old + 1, s_min)
            by_second = doc["received_ms"].get(key, {})
            for s in range(lo, min(new, s_max) + 1):
                latencies.append(seen - s)
                ms = by_second.get(str(s))
                if ms is not None:
                    after_receipt.append(seen - ms / 1000)
        latencies.sort()
        after_receipt.sort()
        missing = 0
        finals = doc["final"][output] + [None] * max(0, doc["expected"] - len(doc["final"][output]))
        for final in finals:
            covered = s_min - 1 if final is None else max(final, s_min - 1)
            missing += max(0, s_max - min(covered, s_max))
        # Age at a sample: its time - the oldest newest-Timestamp over the files, a file
        # counted as current at the window's start at worst (before the load the files are
        # as old as the prefill).
        ages = [t - max(oldest if oldest is not None else -math.inf, s_min - 1)
                for t, by in doc["samples"] for oldest in [by.get(output)]
                if s_min <= t <= s_max + 1]
        # The largest gap between two sweeps in the window: how fine the sampling really was.
        times = [t for t, _ in doc["samples"] if s_min <= t <= s_max + 1]
        gaps = [b - a for a, b in zip(times, times[1:])]
        r = lambda v: None if v is None else round(v, 3)
        out["outputs"][output] = {
            "files": doc["files"][output], "arrivals": len(latencies), "missing": missing,
            "p50_s": r(percentile(latencies, 0.50)), "p99_s": r(percentile(latencies, 0.99)),
            "max_s": r(latencies[-1] if latencies else None),
            "max_age_s": r(max(ages) if ages else None),
            # The same arrivals from the time the store received the message instead of its
            # observation second (no rounding; a second with no message of its own left out).
            "after_receipt_n": len(after_receipt),
            "after_receipt_p50_s": r(percentile(after_receipt, 0.50)),
            "after_receipt_p99_s": r(percentile(after_receipt, 0.99)),
            "after_receipt_max_s": r(after_receipt[-1] if after_receipt else None),
            "sweep_gap_max_s": r(max(gaps) if gaps else None),
        }
    print(json.dumps(out))


# ---------------------------------------------------------------------------------------
# row, report


def row(pairs):
    """The result line: the given keys, and what follows from `summary` (the send summary),
    `before`/`at_end`/`after` (proc at the load's start, its end and after the tail),
    `staleness` (summarise) and `seconds` (the load's length)."""
    doc = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            doc[key] = json.loads(value)
        except ValueError:
            doc[key] = value
    summary, staleness = doc.pop("summary"), doc.pop("staleness")
    before, at_end, after = doc.pop("before"), doc.pop("at_end"), doc.pop("after")
    seconds = summary["seconds"]
    acked = summary["acknowledged"]
    written = after["write_bytes"] - before["write_bytes"]
    received = staleness["raw_bytes"]
    rows = staleness["rows"]
    per = lambda v, n: round(v / n) if n else None
    doc.update(
        messages_sent=summary["sent"], messages_acked=acked,
        messages_per_second=round(summary["messages_per_second"], 1),
        ack_p50_ms=summary["latency_ms"]["p50"], ack_p99_ms=summary["latency_ms"]["p99"],
        ack_max_ms=summary["latency_ms"]["max"],
        send_failures=summary["negative"] + summary["errors"] + summary["unacknowledged"],
        load_seconds=round(seconds, 2),
        rows_stored=rows,
        written_bytes=written,
        cancelled_write_bytes=after["cancelled_write_bytes"] - before["cancelled_write_bytes"],
        written_per_message=per(written, acked),
        written_per_message_at_load_end=per(at_end["write_bytes"] - before["write_bytes"], acked),
        received_per_message=per(received, rows),
        written_ratio=round(written / received, 2) if received else None,
        cpu_s=round(after["cpu_s"] - before["cpu_s"], 2),
        cpu_pct=round(100 * (after["cpu_s"] - before["cpu_s"]) / seconds, 1),
        cpu_pct_at_load_end=round(100 * (at_end["cpu_s"] - before["cpu_s"]) / seconds, 1),
        host_cpu_pct=round(100 * (at_end["host_busy_s"] - before["host_busy_s"]) /
                           (at_end["t"] - before["t"]), 1),
        host_steal_pct=round(100 * (at_end["host_steal_s"] - before["host_steal_s"]) /
                             (at_end["t"] - before["t"]), 1),
        poller_cpu_pct=staleness["poller_cpu_pct"],
    )
    first = next(iter(staleness["outputs"].values()), None)
    if first is not None:
        doc.update(staleness_p50_s=first["p50_s"], staleness_p99_s=first["p99_s"],
                   staleness_max_s=first["max_s"], staleness_max_age_s=first["max_age_s"],
                   staleness_missing=first["missing"], staleness_arrivals=first["arrivals"])
    doc["staleness"] = staleness["outputs"]
    print(json.dumps(doc))


def report(path):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    off = next((r for r in rows if r["variant"] == "off"), None)
    for r in rows:
        if off is not None and r.get("cpu_pct") is not None and off.get("cpu_pct") is not None:
            r["cpu_pct_above_off"] = round(r["cpu_pct"] - off["cpu_pct"], 1)
        if off is not None and r.get("written_per_message") is not None \
                and off.get("written_per_message") is not None:
            r["written_per_message_above_off"] = round(
                r["written_per_message"] - off["written_per_message"])
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")

    def num(v, fmt):
        return "—" if v is None else format(v, fmt)

    print("| variant | cap | staleness p50 / p99 / max (s) | written per msg (KB) "
          "| × received | receiver CPU (% core) | above off |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if r.get("staleness_p50_s") is None:
            stale = "—"
        else:
            stale = (f"{num(r['staleness_p50_s'], '.2f')} / {num(r['staleness_p99_s'], '.2f')} / "
                     f"{num(r['staleness_max_s'], '.2f')}")
        written = r.get("written_per_message")
        above = r.get("cpu_pct_above_off")
        print(f"| {r['variant']} | {r.get('cap') or '—'} | {stale} | "
              f"{num(None if written is None else written / 1000, '.1f')} | "
              f"{num(r.get('written_ratio'), '.1f')} | {num(r.get('cpu_pct'), '.1f')} | "
              f"{'—' if above is None or r['variant'] == 'off' else format(above, '+.1f')} |")
    print()
    print("Staleness: from a message's observation second (the send time, whole seconds) to "
          "the poller seeing it in the file, polling every ~0.1 s; it overestimates the delay "
          "after the ACK by up to 1 s.")
    for r in rows:
        notes = []
        if r.get("staleness_max_age_s") is not None:
            notes.append(f"largest age of a file {r['staleness_max_age_s']:.2f} s")
        first = next(iter(r.get("staleness", {}).values()), None)
        if first and first.get("after_receipt_p50_s") is not None:
            notes.append(f"after receipt p50 / p99 / max {first['after_receipt_p50_s']:.2f} / "
                         f"{first['after_receipt_p99_s']:.2f} / {first['after_receipt_max_s']:.2f} s")
        if r.get("staleness_missing"):
            notes.append(f"{r['staleness_missing']} observation seconds never seen in a file")
        if r.get("catch_up_s") is not None:
            notes.append(f"caught up with the prefilled history in {r['catch_up_s']:.0f} s")
        if r.get("file_bytes_avg"):
            notes.append("files " + ", ".join(f"{k} {v['avg_bytes'] / 1000:,.0f} KB avg"
                                              for k, v in r["file_bytes_avg"].items()))
        notes.append(f"{r['messages_acked']:,} acked at {r['messages_per_second']:.0f} msg/s, "
                     f"ACK p99 {r['ack_p99_ms']:.1f} ms")
        print(f"- {r['variant']}: " + "; ".join(notes))


def main(argv):
    command = argv[1] if len(argv) > 1 else ""
    if command == "proc":
        proc(int(argv[2]))
    elif command == "maxid":
        max_id(argv[2])
    elif command == "store":
        store(argv[2])
    elif command == "poll":
        outputs = [o for o in argv[3].split(",") if o]
        poll(argv[2], outputs, int(argv[4]), argv[5], argv[6],
             float(argv[7]) if len(argv) > 7 else 0.1)
    elif command == "summarise":
        summarise(argv[2], float(argv[3]), float(argv[4]))
    elif command == "sizes":
        sizes(argv[2])
    elif command == "row":
        row(argv[2:])
    elif command == "report":
        report(argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
