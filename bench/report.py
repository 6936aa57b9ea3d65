"""Prints the throughput results (JSON lines) as a Markdown table with ratios to the peers."""

import json
import sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
ours = {r["connections"]: r for r in rows if r["server"] == "hl7-ihp"}
print("| server | connections | msg/s | p50 ms | p90 ms | p99 ms | max ms | RSS MB | errors |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    lat = r["latency_ms"]
    print(f"| {r['server']} | {r['connections']} | {r['messages_per_second']:,.0f} | {lat['p50']:.2f} | "
          f"{lat['p90']:.2f} | {lat['p99']:.2f} | {lat['max']:.2f} | {r.get('rss_mb', 0):.0f} | "
          f"{r['errors'] + r['negative'] + r['unacknowledged']} |")
print()
for r in rows:
    if r["server"] != "hl7-ihp" and r["connections"] in ours and r["messages_per_second"] > 0:
        ratio = ours[r["connections"]]["messages_per_second"] / r["messages_per_second"]
        print(f"- {r['connections']} connections: hl7-ihp (durable) is {ratio:.1f}x {r['server']} (no storage)")
for c, r in sorted(ours.items()):
    if "export_catch_up_s" in r:
        print(f"- {c} connections: JSON files {r['export_behind_messages']:,} messages behind when the load "
              f"stopped, current {r['export_catch_up_s']} s later")
