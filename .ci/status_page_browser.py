#!/usr/bin/env python3
"""Drives headless Chromium over the DevTools protocol to check the daemon's
status page (run by .ci/status-page.sh; Python standard library only).

Chromium is started with --remote-debugging-pipe: it reads protocol commands
from fd 3 and writes answers and events to fd 4, each a JSON message ended by
a NUL byte, so no WebSocket client is needed.

    status_page_browser.py --chromium PATH --url URL --screenshot PNG \
        --id ID [--id ID ...] --calls 'COMMAND' [--hostile-id ID --hostile 'COMMAND']

1. A tab with JavaScript disabled loads URL: the server's render must list
   every ID with its call count.
2. A tab with JavaScript loads URL and records the counts.
3. The --calls command runs (it makes calls through the router).
4. Without reloading, the JavaScript tab must show every ID's count grow
   (its 2 s refresh from status.json), with no script error.
5. The JavaScript-disabled tab reloads: the server's render shows the grown
   counts too.
6. A screenshot of the JavaScript tab (1280x800) goes to PNG.
7. With --hostile: that command starts an instance whose id (--hostile-id)
   and labels are markup; both tabs must show the id as text (the row's
   data-instance attribute reads back as the raw id) and hold no element the
   markup would have made.
"""

import argparse
import base64
import html.parser
import json
import os
import queue
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

TIMEOUT = 20.0


def fail(message):
    print(f"status-page: FAIL: {message}", file=sys.stderr)
    sys.exit(1)


class Rows(html.parser.HTMLParser):
    """The instance rows of the page: data-instance -> the text of its
    `calls` cell; plus the body's data-source and data-refreshes."""

    def __init__(self):
        super().__init__()
        self.rows = {}
        self.body = {}
        self._instance = None
        self._in_calls = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "body":
            self.body = attrs
        elif tag == "tr" and "data-instance" in attrs:
            self._instance = attrs["data-instance"]
        elif tag == "td" and self._instance is not None:
            self._in_calls = "calls" in (attrs.get("class") or "").split()

    def handle_endtag(self, tag):
        if tag == "td":
            self._in_calls = False
        elif tag == "tr":
            self._instance = None

    def handle_data(self, data):
        if self._in_calls and self._instance is not None:
            self.rows[self._instance] = self.rows.get(self._instance, "") + data


def parse(page):
    rows = Rows()
    rows.feed(page)
    counts = {}
    for instance, text in rows.rows.items():
        try:
            counts[instance] = int(text.strip())
        except ValueError:
            fail(f"instance {instance!r} has a calls cell {text!r}, not a number")
    return counts, rows.body


class Browser:
    """One headless Chromium and its DevTools pipe."""

    def __init__(self, chromium):
        self.profile = tempfile.mkdtemp(prefix="status-page-chromium-")
        commands_read, self.commands = os.pipe()
        self.answers, answers_write = os.pipe()

        def wire_pipes():
            os.dup2(commands_read, 3)
            os.dup2(answers_write, 4)
            os.set_inheritable(3, True)
            os.set_inheritable(4, True)

        args = [
            chromium,
            "--headless",
            "--no-sandbox",  # CI runs as root
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--hide-scrollbars",
            "--window-size=1280,800",
            f"--user-data-dir={self.profile}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        self.log = open(os.path.join(self.profile, "chromium.log"), "w+")
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
            pass_fds=(3, 4),
            preexec_fn=wire_pipes,
        )
        os.close(commands_read)
        os.close(answers_write)
        self.next_id = 0
        self.inbox = queue.Queue()
        self.events = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        buffer = b""
        while True:
            chunk = os.read(self.answers, 65536)
            if not chunk:
                self.inbox.put(None)
                return
            buffer += chunk
            while b"\0" in buffer:
                message, buffer = buffer.split(b"\0", 1)
                self.inbox.put(json.loads(message))

    def _next(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        try:
            message = self.inbox.get(timeout=left)
        except queue.Empty:
            return None
        if message is None:
            self.log.seek(0)
            fail(f"chromium closed its DevTools pipe; its log:\n{self.log.read()[-4000:]}")
        return message

    def call(self, method, params=None, session=None):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT
        while True:
            answer = self._next(deadline)
            if answer is None:
                fail(f"no answer to {method} within {TIMEOUT}s")
            if answer.get("id") == self.next_id:
                if "error" in answer:
                    fail(f"{method} failed: {answer['error']}")
                return answer.get("result", {})
            self.events.append(answer)

    def wait_event(self, method, session, since):
        """Waits for event `method` of `session` (seen at or after index
        `since` of the events)."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            for event in self.events[since:]:
                if event.get("method") == method and event.get("sessionId") == session:
                    return event
            message = self._next(deadline)
            if message is None:
                fail(f"no {method} within {TIMEOUT}s")
            self.events.append(message)

    def tab(self, javascript):
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.call("Page.enable", session=session)
        self.call("Runtime.enable", session=session)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False},
            session,
        )
        if not javascript:
            self.call("Emulation.setScriptExecutionDisabled", {"value": True}, session)
        return session

    def load(self, session, url=None):
        since = len(self.events)
        if url is None:
            self.call("Page.reload", {"ignoreCache": True}, session)
        else:
            answer = self.call("Page.navigate", {"url": url}, session)
            if answer.get("errorText"):
                fail(f"loading {url}: {answer['errorText']}")
        self.wait_event("Page.loadEventFired", session, since)

    def dom(self, session):
        root = self.call("DOM.getDocument", {"depth": 0}, session)["root"]["nodeId"]
        return self.call("DOM.getOuterHTML", {"nodeId": root}, session)["outerHTML"]

    def elements(self, session, selector):
        """How many elements of the tab match `selector` (no page script
        needed)."""
        root = self.call("DOM.getDocument", {"depth": 0}, session)["root"]["nodeId"]
        return len(self.call("DOM.querySelectorAll", {"nodeId": root, "selector": selector}, session)["nodeIds"])

    def script_errors(self, session):
        return [
            e["params"]["exceptionDetails"]
            for e in self.events
            if e.get("method") == "Runtime.exceptionThrown" and e.get("sessionId") == session
        ]

    def screenshot(self, session, path):
        data = base64.b64decode(self.call("Page.captureScreenshot", {"format": "png"}, session)["data"])
        if not data.startswith(b"\x89PNG\r\n\x1a\n") or len(data) < 10_000:
            fail(f"the screenshot is not a plausible PNG ({len(data)} bytes)")
        with open(path, "wb") as out:
            out.write(data)

    def close(self):
        try:
            self.call("Browser.close")
        except SystemExit:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


def expect_ids(what, counts, ids):
    missing = [i for i in ids if i not in counts]
    if missing:
        fail(f"{what}: no row for {missing}; rows: {counts}")


def wait_for(browser, session, what, check):
    """Polls the tab's DOM until check(counts, body, page) holds."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        page = browser.dom(session)
        counts, body = parse(page)
        if check(counts, body, page):
            return counts, body, page
        if time.monotonic() > deadline:
            fail(
                f"{what} within {TIMEOUT}s: rows {counts}, body {body}, "
                f"script errors {browser.script_errors(session)}"
            )
        time.sleep(0.25)


def run(command, what):
    print(f"status-page: {what}: {command}", file=sys.stderr)
    done = subprocess.run(shlex.split(command), stdout=subprocess.DEVNULL, timeout=90)
    if done.returncode != 0:
        fail(f"{what} failed (exit {done.returncode})")


def main():
    options = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    options.add_argument("--chromium", required=True)
    options.add_argument("--url", required=True)
    options.add_argument("--screenshot", required=True)
    options.add_argument("--id", dest="ids", action="append", required=True)
    options.add_argument("--calls", required=True)
    options.add_argument("--hostile-id")
    options.add_argument("--hostile")
    args = options.parse_args()
    ids = args.ids
    # A timeout's SIGTERM still closes the browser (the finally below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("status-page: FAIL: terminated"))

    browser = Browser(args.chromium)
    hostile = None
    try:
        static = browser.tab(javascript=False)
        browser.load(static, args.url)
        before_static, body = parse(browser.dom(static))
        expect_ids("the page without JavaScript", before_static, ids)
        if body.get("data-source") != "server":
            fail(f"the page without JavaScript is not the server's render: {body}")
        print(f"status-page: without JavaScript the server's render shows {before_static}", file=sys.stderr)

        live = browser.tab(javascript=True)
        browser.load(live, args.url)
        before, body = parse(browser.dom(live))
        expect_ids("the page with JavaScript", before, ids)

        run(args.calls, "calls while the page is open")
        after, body, _ = wait_for(
            browser,
            live,
            "the page did not refresh",
            lambda counts, body, _: body.get("data-source") == "json"
            and all(counts.get(i, 0) > before[i] for i in ids),
        )
        errors = browser.script_errors(live)
        if errors:
            fail(f"the page's script threw: {errors}")
        print(
            f"status-page: without reloading, the script refreshed the counts {before} -> {after} "
            f"({body.get('data-refreshes')} refreshes)",
            file=sys.stderr,
        )

        browser.load(static)
        after_static, _ = parse(browser.dom(static))
        if not all(after_static.get(i, 0) > before_static[i] for i in ids):
            fail(f"a reload without JavaScript did not show the calls: {before_static} -> {after_static}")
        print(f"status-page: reloaded without JavaScript: {before_static} -> {after_static}", file=sys.stderr)

        browser.screenshot(live, args.screenshot)
        print(f"status-page: screenshot in {args.screenshot}", file=sys.stderr)

        if args.hostile:
            print(f"status-page: starting a hostile instance: {args.hostile}", file=sys.stderr)
            hostile = subprocess.Popen(shlex.split(args.hostile), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            shown = lambda counts, body, page: args.hostile_id in counts
            wait_for(browser, live, "the script did not show the hostile instance", shown)
            browser.load(static)
            wait_for(browser, static, "the server did not show the hostile instance", shown)
            for name, session in (("the script's render", live), ("the server's render", static)):
                made = browser.elements(session, "#services img, #services script, #services b")
                if made:
                    fail(f"{name} holds {made} element(s) made from a registrant's markup")
            pwned = browser.call(
                "Runtime.evaluate", {"expression": "typeof window.pwned", "returnByValue": True}, live
            )["result"].get("value")
            if pwned != "undefined":
                fail(f"a registrant's markup ran in the page (window.pwned is {pwned})")
            errors = browser.script_errors(live)
            if errors:
                fail(f"the page's script threw: {errors}")
            print("status-page: the hostile id and labels show as text in both renders", file=sys.stderr)
    finally:
        if hostile is not None:
            hostile.terminate()
            try:
                hostile.wait(timeout=10)
            except subprocess.TimeoutExpired:
                hostile.kill()
        browser.close()


if __name__ == "__main__":
    main()
