"""Open a report in headless Chromium: collect console errors, broken images and network requests; screenshot it.

The report is HTML meant for a browser, so it is checked in one. Chromium is driven over the
DevTools protocol on `--remote-debugging-pipe` (JSON messages separated by NUL on file descriptors
3 and 4, as Puppeteer's pipe transport does), which needs only the standard library. DNS is mapped
to nothing, so a report that fetches anything shows it as a failed request instead of passing
because the network happened to be up.

    python -m reports.browser reports_out/quick/report.html --screenshot reports_out/screenshot.png

Needs Debian's `chromium` (`apt-get install chromium`); `.ci/run` installs it.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BINARIES = ("chromium", "chromium-browser", "google-chrome")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
    "--disable-background-networking", "--disable-component-update", "--disable-extensions",
    "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio", "--host-resolver-rules=MAP * ~NOTFOUND",
)  # fmt: skip
TIMEOUT_S = 60.0
# Every <img> that failed to decode (or never loaded) has naturalWidth 0 once the load event fired.
BROKEN_IMAGES_JS = (
    "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))"
    ".map(i => (i.alt || '(no alt)') + ' <' + i.src.slice(0, 60) + '>')"
)


def find_chromium() -> str | None:
    """Path of a Chromium binary on PATH, or None."""
    return next((path for name in BINARIES if (path := shutil.which(name))), None)


@dataclass
class PageCheck:
    """What a page did on load: anything in the first three lists is a failure."""

    console_errors: list[str] = field(default_factory=list)
    broken_images: list[str] = field(default_factory=list)
    external_requests: list[str] = field(default_factory=list)
    images: int = 0
    screenshot: Path | None = None

    @property
    def problems(self) -> list[str]:
        """Every failure, one line each."""
        return ([f"console: {e}" for e in self.console_errors] + [f"broken image: {i}" for i in self.broken_images]
                + [f"network request: {u}" for u in self.external_requests])  # fmt: skip


class _Pipe:
    """A DevTools session over Chromium's debugging pipe: `call` sends a command and waits for its reply."""

    def __init__(self, binary: str, profile: str):
        to_child, self._write = os.pipe()
        self._read, from_child = os.pipe()

        def _fds() -> None:  # in the child, before exec: the protocol lives on fds 3 (in) and 4 (out)
            os.dup2(to_child, 3)
            os.dup2(from_child, 4)

        self.process = subprocess.Popen(
            [binary, *FLAGS, "--remote-debugging-pipe", f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            pass_fds=(3, 4), preexec_fn=_fds,
        )  # fmt: skip
        os.close(to_child)
        os.close(from_child)
        self._open = {self._write, self._read}
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, session: str | None = None, **params) -> dict:
        """Send `method` and return its result; events read meanwhile are kept in `events`."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"DevTools {method} failed: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, event: str) -> dict:
        """Block until `event` arrives (or has already arrived) and return it."""
        for message in self.events:
            if message.get("method") == event:
                return message
        while True:
            message = self._receive()
            self.events.append(message)
            if message.get("method") == event:
                return message

    def _receive(self) -> dict:
        deadline = time.monotonic() + TIMEOUT_S
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._read], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(self._read, 1 << 20) if ready else b""
            if not chunk:  # timed out, or Chromium exited and closed the pipe
                self.close()
                stderr = self.process.stderr.read().decode(errors="replace")[-2000:] if self.process.stderr else ""
                raise RuntimeError(f"no DevTools reply from Chromium within {TIMEOUT_S:.0f} s; stderr:\n{stderr}")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def close(self) -> None:
        """Stop Chromium (politely, then for good) and close the pipe."""
        if self.process.poll() is None:
            try:
                os.write(self._write, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
                self.process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        # Once only: a second os.close of the same number could close a descriptor opened since.
        for fd in (self._write, self._read):
            if fd in self._open:
                self._open.discard(fd)
                os.close(fd)


def _problems(events: list[dict], check: PageCheck) -> None:
    """Sort the page's events into console errors (console.error, uncaught exceptions, error logs) and requests."""
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            check.console_errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params["args"]))
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            check.console_errors.append(details.get("exception", {}).get("description") or details.get("text", ""))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            check.console_errors.append(params["entry"]["text"])
        elif method == "Network.requestWillBeSent":
            url = params["request"]["url"]
            if not url.startswith(("data:", "file:", "about:")):
                check.external_requests.append(url)


def check_page(html: str | Path, screenshot: str | Path | None = None, width: int = 1280,
               binary: str | None = None) -> PageCheck:  # fmt: skip
    """Load `html` from disk in headless Chromium and report what went wrong; optionally save a full-page PNG.

    Args:
        html: path of the HTML file.
        screenshot: where to write a PNG of the whole page (None: no screenshot).
        width: viewport width in CSS pixels.
        binary: Chromium to run (default: the first of BINARIES on PATH).

    Returns:
        The console errors (console.error, uncaught exceptions, browser error log), images that did not
        decode, requests to anything but data:/file: URLs, and the number of images.

    """
    binary = binary or find_chromium()
    if binary is None:
        raise FileNotFoundError(f"no Chromium found on PATH (tried {', '.join(BINARIES)})")
    check = PageCheck()
    with tempfile.TemporaryDirectory(prefix="lch-chromium-") as profile:
        pipe = _Pipe(binary, profile)
        try:
            target = pipe.call("Target.createTarget", url="about:blank")["targetId"]
            session = pipe.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                pipe.call(f"{domain}.enable", session)
            pipe.call("Emulation.setDeviceMetricsOverride", session, width=width, height=900, deviceScaleFactor=1,
                      mobile=False)  # fmt: skip
            pipe.call("Page.navigate", session, url=Path(html).resolve().as_uri())
            pipe.wait_for("Page.loadEventFired")
            found = pipe.call("Runtime.evaluate", session, expression=BROKEN_IMAGES_JS, returnByValue=True)
            check.broken_images = list(found["result"]["value"])
            count = pipe.call("Runtime.evaluate", session, expression="document.images.length", returnByValue=True)
            check.images = int(count["result"]["value"])
            if screenshot is not None:
                size = pipe.call("Page.getLayoutMetrics", session)["cssContentSize"]
                clip = {"x": 0, "y": 0, "width": width, "height": size["height"], "scale": 1}
                shot = pipe.call("Page.captureScreenshot", session, format="png", captureBeyondViewport=True, clip=clip)
                check.screenshot = Path(screenshot)
                check.screenshot.parent.mkdir(parents=True, exist_ok=True)
                check.screenshot.write_bytes(base64.b64decode(shot["data"]))
            _problems(pipe.events, check)
        finally:
            pipe.close()
    return check


def main(argv: list[str] | None = None) -> int:
    """Check a report in Chromium and optionally save a screenshot; exit 1 on any problem."""
    parser = argparse.ArgumentParser(prog="python -m reports.browser", description=main.__doc__)
    parser.add_argument("html", help="report.html to open")
    parser.add_argument("--screenshot", help="write a full-page PNG here, e.g. reports_out/screenshot.png")
    parser.add_argument("--width", type=int, default=1280, help="viewport width in CSS pixels (default 1280)")
    args = parser.parse_args(argv)
    if find_chromium() is None:
        print(f"python -m reports.browser: error: no Chromium on PATH (tried {', '.join(BINARIES)}): "
              "apt-get install chromium", file=sys.stderr)  # fmt: skip
        return 2
    if not Path(args.html).is_file():
        print(f"python -m reports.browser: error: '{args.html}' is not a file", file=sys.stderr)
        return 2
    check = check_page(args.html, args.screenshot, args.width)
    for line in check.problems:
        print(line, file=sys.stderr)
    shot = f", screenshot written to {check.screenshot}" if check.screenshot else ""
    print(f"{args.html}: {check.images} images, {len(check.problems)} problems{shot}")
    return 1 if check.problems else 0


if __name__ == "__main__":
    sys.exit(main())
