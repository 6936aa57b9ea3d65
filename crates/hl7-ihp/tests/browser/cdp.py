#!/usr/bin/env python3
"""A small Chrome DevTools Protocol driver for headless Chromium, standard library only.

Chromium is started with --remote-debugging-pipe: it reads commands from file descriptor 3
and writes answers and events to descriptor 4, each a JSON text ended by a NUL byte.

Used three ways:
  - as a module (bench/dashboard.py): Browser, Page;
  - `cdp.py serve`: JSON lines on standard input, one answer line each on standard output,
    for the Rust browser test (tests/it/browser.rs), which drives the receiver and the
    simulator and asks the browser questions;
  - `cdp.py shot URL FILE [--wait EXPR]`: one screenshot.
"""

import argparse
import base64
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

CANDIDATES = ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"]


def find_chromium():
    """The Chromium binary: $CHROMIUM, else the first of the usual names on PATH."""
    if os.environ.get("CHROMIUM"):
        return os.environ["CHROMIUM"]
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


class CdpError(Exception):
    pass


class Browser:
    """One headless Chromium and the pipe to it."""

    def __init__(self, width=1920, height=1080, binary=None):
        binary = binary or find_chromium()
        if not binary:
            raise CdpError("chromium not found")
        self.width, self.height = width, height
        self.profile = tempfile.mkdtemp(prefix="hl7-ihp-chromium-")
        args = [
            binary,
            "--headless",
            "--no-sandbox",
            "--remote-debugging-pipe",
            f"--user-data-dir={self.profile}",
            f"--window-size={width},{height}",
            "--force-device-scale-factor=1",
            "--hide-scrollbars",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-default-apps",
            "--disable-extensions",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--mute-audio",
            "--password-store=basic",
            "--use-mock-keychain",
            "about:blank",
        ]
        # Chromium reads fd 3 and writes fd 4. The pipe ends are first moved above 9, so
        # that putting them on 3 and 4 in the child cannot overwrite one with the other;
        # everything else of ours is close-on-exec and does not reach Chromium.
        to_chrome_r, to_chrome_w = os.pipe()
        from_chrome_r, from_chrome_w = os.pipe()
        child_r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD_CLOEXEC, 10)
        child_w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._to_chrome, self._from_chrome = to_chrome_w, from_chrome_r

        def on_fds_3_and_4():
            os.dup2(child_r, 3)
            os.dup2(child_w, 4)

        self.process = subprocess.Popen(
            args,
            preexec_fn=on_fds_3_and_4,
            close_fds=False,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL if not os.environ.get("CDP_DEBUG") else None,
        )
        os.close(child_r)
        os.close(child_w)
        self._next_id = 0
        self._lock = threading.Lock()
        self._answers = {}
        self._arrived = threading.Condition()
        self._listeners = []
        self._closed = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.call("Target.setDiscoverTargets", discover=False)

    def _read(self):
        buffer = b""
        while True:
            try:
                chunk = os.read(self._from_chrome, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with self._arrived:
                    self._closed = True
                    self._arrived.notify_all()
                return
            buffer += chunk
            while b"\0" in buffer:
                text, buffer = buffer.split(b"\0", 1)
                message = json.loads(text)
                if "id" in message:
                    with self._arrived:
                        self._answers[message["id"]] = message
                        self._arrived.notify_all()
                else:
                    for listener in list(self._listeners):
                        listener(message)

    def call(self, method, session=None, timeout=60, **params):
        """Sends a command and waits for its answer; raises CdpError for an error answer."""
        with self._lock:
            self._next_id += 1
            ident = self._next_id
            message = {"id": ident, "method": method, "params": params}
            if session:
                message["sessionId"] = session
            os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        with self._arrived:
            while ident not in self._answers:
                if self._closed:
                    raise CdpError(f"chromium exited during {method}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CdpError(f"no answer to {method} within {timeout} s")
                self._arrived.wait(left)
            answer = self._answers.pop(ident)
        if "error" in answer:
            raise CdpError(f"{method}: {answer['error'].get('message')}")
        return answer.get("result", {})

    def new_page(self, fresh_context=True):
        """A new tab; in a browser context of its own (no cache or storage shared) by default."""
        params = {"url": "about:blank"}
        if fresh_context:
            params["browserContextId"] = self.call("Target.createBrowserContext")["browserContextId"]
        target = self.call("Target.createTarget", **params)["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        return Page(self, target, session, params.get("browserContextId"))

    def close(self):
        try:
            self.call("Browser.close", timeout=10)
        except CdpError:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for fd in (self._to_chrome, self._from_chrome):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)


class Page:
    """One tab: navigation, evaluation, waiting on conditions, screenshots, its JS errors."""

    def __init__(self, browser, target, session, context):
        self.browser, self.target, self.session, self.context = browser, target, session, context
        self.errors = []
        self._events = []
        self._event = threading.Condition()
        browser._listeners.append(self._on_message)
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")
        self.viewport(browser.width, browser.height)

    def _on_message(self, message):
        if message.get("sessionId") != self.session:
            return
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text")
            self.errors.append(f"exception: {text}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            parts = [str(a.get("value", a.get("description", ""))) for a in params.get("args", [])]
            self.errors.append("console.error: " + " ".join(parts))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            self.errors.append(f"log: {entry.get('text')} {entry.get('url', '')}".strip())
        with self._event:
            self._events.append(method)
            self._event.notify_all()

    def call(self, method, timeout=60, **params):
        return self.browser.call(method, session=self.session, timeout=timeout, **params)

    def viewport(self, width, height):
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def goto(self, url, timeout=60):
        """Navigates and waits for the load event."""
        with self._event:
            self._events.clear()
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        with self._event:
            while "Page.loadEventFired" not in self._events:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CdpError(f"{url} did not load within {timeout} s")
                self._event.wait(left)

    def eval(self, expression, timeout=60):
        """The value of a JavaScript expression (promises awaited), as JSON."""
        result = self.call(
            "Runtime.evaluate", timeout=timeout, expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise CdpError(f"evaluating {expression[:80]!r}: {text}")
        return result.get("result", {}).get("value")

    def wait(self, expression, timeout=60, what=None):
        """Polls `expression` until it is truthy; returns its value. Raises after `timeout`."""
        deadline = time.monotonic() + timeout
        pause = 0.02
        last = None
        while True:
            try:
                last = self.eval(expression)
            except CdpError as error:
                last = str(error)
            else:
                if last:
                    return last
            if time.monotonic() > deadline:
                raise CdpError(f"timed out after {timeout} s waiting for {what or expression}; last value {last!r}")
            time.sleep(pause)
            pause = min(pause * 2, 0.25)

    def click(self, selector):
        """A real mouse click in the middle of the first element `selector` matches."""
        box = self.eval(
            "(() => { const e = document.querySelector(%s); if (!e) return null; e.scrollIntoView({block: 'center'});"
            " const r = e.getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2]; })()"
            % json.dumps(selector)
        )
        if not box:
            raise CdpError(f"nothing matches {selector}")
        x, y = box
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            extra = {} if kind == "mouseMoved" else {"button": "left", "clickCount": 1}
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, **extra)

    def type_text(self, text):
        self.call("Input.insertText", text=text)

    def screenshot(self, path, full_page=False):
        params = {"format": "png"}
        if full_page:
            params["captureBeyondViewport"] = True
        data = self.call("Page.captureScreenshot", **params)["data"]
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def close(self):
        self.browser._listeners.remove(self._on_message)
        self.browser.call("Target.closeTarget", targetId=self.target)
        if self.context:
            self.browser.call("Target.disposeBrowserContext", browserContextId=self.context)


def serve(args):
    """JSON lines in, JSON lines out: {"cmd": ..., ...} → {"ok": true, "value": ...}."""
    browser = Browser(args.width, args.height)
    page = browser.new_page()
    out = sys.stdout
    out.write(json.dumps({"ok": True, "value": "ready"}) + "\n")
    out.flush()
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            request = json.loads(line)
            cmd = request.get("cmd")
            try:
                if cmd == "goto":
                    page.goto(request["url"], request.get("timeout", 60))
                    value = None
                elif cmd == "eval":
                    value = page.eval(request["expr"])
                elif cmd == "wait":
                    value = page.wait(request["expr"], request.get("timeout", 60), request.get("what"))
                elif cmd == "click":
                    value = page.click(request["selector"])
                elif cmd == "type":
                    value = page.type_text(request["text"])
                elif cmd == "screenshot":
                    value = page.screenshot(request["path"], request.get("full_page", False))
                elif cmd == "viewport":
                    value = page.viewport(request["width"], request["height"])
                elif cmd == "errors":
                    value = page.errors
                elif cmd == "quit":
                    out.write(json.dumps({"ok": True, "value": None}) + "\n")
                    out.flush()
                    break
                else:
                    raise CdpError(f"unknown command {cmd!r}")
                answer = {"ok": True, "value": value}
            except CdpError as error:
                answer = {"ok": False, "error": str(error)}
            out.write(json.dumps(answer) + "\n")
            out.flush()
    finally:
        browser.close()


def shot(args):
    browser = Browser(args.width, args.height)
    try:
        page = browser.new_page()
        page.goto(args.url)
        if args.wait:
            page.wait(args.wait, args.timeout)
        time.sleep(args.settle)
        page.screenshot(args.file, args.full_page)
        for error in page.errors:
            print(error, file=sys.stderr)
    finally:
        browser.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="JSON lines on stdin and stdout")
    one = commands.add_parser("shot", help="one screenshot")
    one.add_argument("url")
    one.add_argument("file")
    one.add_argument("--wait", help="a JavaScript condition to wait for first")
    one.add_argument("--timeout", type=float, default=60)
    one.add_argument("--settle", type=float, default=0.3, help="seconds to wait after the condition")
    one.add_argument("--full-page", action="store_true")
    commands.add_parser("probe", help="exit 0 when chromium starts")
    args = parser.parse_args()
    if args.command == "serve":
        serve(args)
    elif args.command == "shot":
        shot(args)
    elif args.command == "probe":
        Browser(args.width, args.height).close()


if __name__ == "__main__":
    main()
