#!/usr/bin/env python3
"""The dashboard's first paint in headless Chromium (tests/browser/cdp.py).

Each run opens the ward view in a fresh browser context (no cache, no storage) and reports,
from navigation start: first contentful paint; the moment all N tiles are in the DOM; the
first frame after that (painted); and how long GET /api/v1/patients took and how large it
was. Run by bench/dashboard.sh, which starts a receiver and feeds it N patients.
"""

import argparse
import json
import os
import statistics
import sys
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "hl7-ihp", "tests", "browser"))
import cdp  # noqa: E402

# Installed before the page's own scripts: notes when the ward holds N tiles, and the end of
# the first frame after that (a timer queued from requestAnimationFrame runs after the paint).
OBSERVER = """
(() => {
  const wanted = %d;
  const check = () => {
    if (window.__tilesAt !== undefined) return;
    if (document.querySelectorAll('.ward .tile').length >= wanted) {
      window.__tilesAt = performance.now();
      observer.disconnect();
      requestAnimationFrame(() => setTimeout(() => { window.__tilesPaintedAt = performance.now(); }, 0));
    }
  };
  const observer = new MutationObserver(check);
  observer.observe(document, { childList: true, subtree: true });
})();
"""

MEASURE = """
(() => {
  const fcp = performance.getEntriesByName('first-contentful-paint')[0];
  const api = performance.getEntriesByType('resource').find((e) => e.name.endsWith('/api/v1/patients'));
  const nav = performance.getEntriesByType('navigation')[0];
  return {
    fcp: fcp ? fcp.startTime : null,
    tiles: window.__tilesAt,
    painted: window.__tilesPaintedAt,
    dom_content_loaded: nav ? nav.domContentLoadedEventEnd : null,
    api_ms: api ? api.duration : null,
    api_start: api ? api.startTime : null,
    api_bytes: api ? api.encodedBodySize : null,
    n_tiles: document.querySelectorAll('.ward .tile').length,
  };
})()
"""


def wait_for_patients(base, n, timeout=120):
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{base}/api/v1/patients", timeout=10) as response:
                body = json.load(response)
            if len(body["patients"]) >= n:
                return body
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"the API did not list {n} patients within {timeout} s")
        time.sleep(0.5)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", help="the receiver's HTTP address, http://127.0.0.1:PORT")
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--screenshots", help="a folder for screenshots of the ward")
    parser.add_argument("--json", help="write the runs here")
    args = parser.parse_args()

    wait_for_patients(args.base, args.patients)
    browser = cdp.Browser(args.width, args.height)
    runs = []
    try:
        # One run to start the browser's own processes, not counted.
        for n in range(args.runs + 1):
            page = browser.new_page(fresh_context=True)
            page.call("Page.addScriptToEvaluateOnNewDocument", source=OBSERVER % args.patients)
            page.goto(f"{args.base}/")
            page.wait("window.__tilesPaintedAt !== undefined && performance.getEntriesByName('first-contentful-paint').length > 0",
                      what=f"{args.patients} tiles painted")
            result = page.eval(MEASURE)
            if page.errors:
                print("page errors:", *page.errors, sep="\n  ", file=sys.stderr)
            if n > 0:
                runs.append(result)
            last = n == args.runs
            if last and args.screenshots:
                time.sleep(1.5)
                page.screenshot(os.path.join(args.screenshots, f"ward-{args.patients}-patients.png"))
                page.viewport(1280, 800)
                time.sleep(0.5)
                page.screenshot(os.path.join(args.screenshots, f"ward-{args.patients}-patients-1280x800.png"))
            page.close()
    finally:
        browser.close()

    print(f"dashboard first paint, {args.patients} patients, {args.width}x{args.height}, fresh browser context per run")
    print(f"{'run':>3} {'FCP ms':>8} {'tiles in DOM ms':>16} {'tiles painted ms':>17} {'GET patients ms':>16} {'KB':>7}")
    for i, r in enumerate(runs, 1):
        print(f"{i:>3} {r['fcp']:>8.0f} {r['tiles']:>16.0f} {r['painted']:>17.0f} {r['api_ms'] or 0:>16.0f} {(r['api_bytes'] or 0) / 1024:>7.0f}")
    med = lambda key: statistics.median(r[key] for r in runs)  # noqa: E731
    print(f"median: first contentful paint {med('fcp'):.0f} ms, all {args.patients} tiles painted {med('painted'):.0f} ms "
          f"(in the DOM {med('tiles'):.0f} ms), GET /api/v1/patients {med('api_ms'):.0f} ms")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"patients": args.patients, "runs": runs}, f, indent=1)


if __name__ == "__main__":
    main()
