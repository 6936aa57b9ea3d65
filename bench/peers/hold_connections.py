"""Opens N idle TCP connections to 127.0.0.1:PORT and reports the receiver's RSS with them.

Usage: python3 hold_connections.py PORT N RECEIVER_PID HTTP_PORT
Prints one JSON line: connections open (by the receiver's own gauge), RSS before and with them.
"""

import json
import socket
import sys
import time
import urllib.request

port, n, pid, http = (int(a) for a in sys.argv[1:5])


def rss_mb():
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def open_gauge():
    text = urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith("hl7ihp_connections_open "):
            return int(line.split()[1])
    return 0


before = rss_mb()
sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
deadline = time.time() + 60
while open_gauge() < n and time.time() < deadline:
    time.sleep(0.1)
print(json.dumps({"idle_connections": open_gauge(), "rss_mb_before": round(before, 1), "rss_mb": round(rss_mb(), 1)}))
for s in sockets:
    s.close()
