"""The demo, as a person would run it, from a script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ..conftest import ROOT

SCRIPTS = Path(__file__).parent / "scripts"


def run_demo(script: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", "demo", "--script", str(script)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_demo_script_shows_break_and_heal() -> None:
    done = run_demo(SCRIPTS / "status.txt")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Traceback" not in out + done.stderr
    verdicts = [
        line.removeprefix("│ ") for line in out.splitlines() if line.startswith(("│ ✅", "│ 🚨"))
    ]
    assert verdicts == [
        "✅ all healthy",
        "🚨 eu-west down: d1 error; traffic of WEU EEU ME NAF SAF failed over to us-east",
        "🚨 eu-west down: d1 error; traffic of WEU EEU ME NAF SAF failed over to us-east",
        "🚨 eu-west down: d1 error; traffic of WEU EEU ME NAF SAF failed over to us-east",
        "✅ all healthy",
    ]
    assert "(eu-west gateway is now degraded (d1 error))" in out
    assert "posted in #failover" in out
    assert "`frobnicate` is not a /failover command" in out
    assert "Unknown region `mars`" in out


def test_demo_script_with_a_bad_line_fails(tmp_path: Path) -> None:
    script = tmp_path / "bad.txt"
    script.write_text("break mars down\n/failover help\n")
    done = run_demo(script)
    assert done.returncode == 1
    assert "(demo: unknown region 'mars' (regions: us-east, eu-west, apac-sg))" in done.stdout
    assert "/failover status [region] [public]" in done.stdout  # it went on after the bad line


def test_demo_shows_notifications_arriving_and_a_page_triggered_then_resolved() -> None:
    done = run_demo(SCRIPTS / "paging.txt", timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Traceback" not in out + done.stderr
    # Cloudflare's stand-in tells the bot, which takes it (200), both ways.
    assert "(Cloudflare notified the bot: Pool foundation-eu-west is now Unhealthy" in out
    assert "(Cloudflare notified the bot: Pool foundation-eu-west is now Healthy" in out
    assert "; the bot answered HTTP 200)" in out
    # One alert in PagerDuty: triggered by the outage, resolved when the incident closed.
    assert "(PagerDuty: alert 1 triggered: [api.erlvinc.com] Incident #1: eu-west down" in out
    assert "(PagerDuty: alert 1 resolved:" in out
    assert "alert 2" not in out
    listed = [line.strip() for line in out.splitlines() if line.startswith("  alert 1 ")]
    assert listed[0].startswith("alert 1 triggered")
    assert listed[-1].startswith("alert 1 resolved")
