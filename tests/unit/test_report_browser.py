"""The HTML report opened in headless Chromium: no console error, no broken image, no network; a screenshot to look at.

Skips where Chromium is not installed, except under CI (the `CI` variable set), where a missing
browser fails the test: `.ci/run` installs Debian's chromium, and a silent skip there would hide it.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from reports.browser import check_page, find_chromium
from reports.render import write_report

SCREENSHOT = Path(__file__).resolve().parents[2] / "reports_out" / "screenshot.png"  # gitignored


@pytest.fixture(scope="module")
def chromium():
    binary = find_chromium()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set but no Chromium is on PATH: .ci/run installs Debian's chromium before tox")
        pytest.skip("Chromium is not installed (apt-get install chromium); CI runs this test")
    return binary


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A report of a tiny sweep, one cell flagged past the trained window so the † and hollow markers render."""
    from harness.runner import run_sweep
    from harness.sweep import SweepSpec

    root = tmp_path_factory.mktemp("browser")
    spec = SweepSpec(
        model="tiny-random-llama", samples=2, output=str(root / "store.sqlite"), seed=0,
        methods=[{"name": "full"}, {"name": "streaming", "options": {"n_sink": 4, "window": 32, "chunk_size": 64}}],
        tasks=[{"name": "passkey", "lengths": [256, 384, 512], "options": {"max_new_tokens": 4}}],
    )  # fmt: skip
    assert {o.status for o in run_sweep(spec, progress=False)} == {"done"}
    with sqlite3.connect(spec.output) as db:
        flag = json.dumps(True)
        db.execute(
            "UPDATE samples SET metadata = json_set(metadata, '$.beyond_trained_window', json(?)) "
            "WHERE cell_id IN (SELECT cell_id FROM cells WHERE label = 'full' AND length = 512)",
            (flag,),
        )
    return write_report(spec.output, root / "out")


def test_report_loads_cleanly_in_chromium(chromium, report):
    check = check_page(report.html, screenshot=SCREENSHOT, binary=chromium)
    assert check.problems == []
    assert check.images == len(report.figures) > 0  # every figure is an <img> that decoded
    png = SCREENSHOT.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    height = int.from_bytes(png[20:24], "big")  # IHDR: the whole page, not just the first screen
    assert height > 3000, height


def test_checker_flags_broken_pages(chromium, report, tmp_path):
    """The check can fail: a bad data URI, console.error, a syntax error, an uncaught throw and a remote image."""
    html = report.html.read_text()
    assert html.count('src="data:image/png;base64,') == len(report.figures)
    html = html.replace('src="data:image/png;base64,', 'src="data:image/png;base64,AAAA', 1)  # corrupt PNG
    planted = (
        '<img alt="remote figure" src="http://example.invalid/figure.png">'
        '<script>console.error("planted console error")</script>'
        "<script>this is not javascript</script>"
        '<script>throw new Error("planted exception")</script>'
    )
    broken = tmp_path / "broken.html"
    broken.write_text(html.replace("</body>", planted + "</body>"))
    check = check_page(broken, binary=chromium)
    errors = "\n".join(check.console_errors)
    assert "planted console error" in errors
    assert "SyntaxError" in errors
    assert "planted exception" in errors
    assert len(check.broken_images) == 2  # the corrupted figure and the remote one (no network)
    assert any("data:image/png;base64,AAAA" in image for image in check.broken_images)
    assert check.external_requests == ["http://example.invalid/figure.png"]


def test_the_checker_without_chromium_or_a_report_is_one_line(tmp_path, monkeypatch, capsys):
    from reports import browser

    monkeypatch.setenv("PATH", str(tmp_path))  # no browser on it
    assert browser.main([str(tmp_path / "report.html")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "python -m reports.browser: error: no Chromium on PATH (tried chromium, chromium-browser, google-chrome): "
        "apt-get install chromium"
    ]
