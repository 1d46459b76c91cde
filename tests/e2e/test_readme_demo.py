"""The README's demo block, pasted into the console as written: it runs to the end.

The block is read from README.md itself, so the README and the demo cannot drift apart.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from bot.sandbox.terminal import without_prompt

from ..conftest import ROOT


def readme_demo() -> str:
    """The README's console block: the fenced block whose lines all start with the prompt."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", text, re.S | re.M):
        lines = [line for line in block.splitlines() if line.strip()]
        if lines and all(line.startswith("failover> ") for line in lines):
            return str(block)
    raise AssertionError("README.md has no block of `failover> ` lines")


@pytest.mark.timeout(180)
def test_the_readme_demo_pasted_as_written_runs_to_the_end() -> None:
    block = readme_demo()
    # Where a newcomer runs it: the repository, without any Slack or Cloudflare settings.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLACK_", "CLOUDFLARE_")) and k != "FAILOVER_CONFIG"
    }
    done = subprocess.run(
        [sys.executable, "-m", "bot", "demo"],
        cwd=ROOT,
        env=env,
        input=block,  # piped, as a paste of the whole block
        capture_output=True,
        text=True,
        timeout=170,
    )
    out = done.stdout
    # Every line was understood (piped lines the console did not understand exit 1) ...
    assert done.returncode == 0, out[-3000:] + done.stderr
    assert "Traceback" not in out + done.stderr
    assert "(demo:" not in out
    # ... and nothing the bot was asked was refused or misread.
    for wrong in ("⚠️", "Refused", "no reply within", "There is no", "BLOCKED"):
        assert wrong not in out, f"{wrong!r} in the demo's output:\n{out[-4000:]}"
    # The transcript reads like the session: each line after the prompt, once.
    for line in block.splitlines():
        if line.strip():
            assert f"failover> {without_prompt(line)}" in out
    assert "failover> failover>" not in out
    # What the README says each step shows.
    assert "us-east down: connection refused; traffic of WNAM ENAM NSAM SSAM failed over" in out
    assert "# Incident #1: us-east down" in out  # the Markdown postmortem draft
    assert "Ready to drain eu-west (#1)." in out
    assert "Draining eu-west (#1)" in out
    assert "• #1 eu-west active by" in out  # /failover drains
    assert "Ready to drill eu-west (#2)." in out
    assert "Drill #2: `/failover drill report 2` once it has run." in out
    assert "Drill #2 of eu-west starting" in out
    assert "Drill #2 of eu-west: SUCCEEDED" in out  # the report
    # `channel` shows each thread under its parent message, indented.
    lines = out.splitlines()
    card = lines.index("│ ✅ Drill #2 of eu-west: succeeded")
    thread = [line for line in lines[card:] if line.startswith("    │ ")]
    assert any("SUCCEEDED: RTO WEU" in line for line in thread)
    incident = next(i for i, line in enumerate(lines) if line.startswith("│ 🔴 Incident #1"))
    replies = lines[incident:]
    first_reply = next(line for line in replies if line.startswith("    │ "))
    assert first_reply.startswith("    │ 🔴 Pool Down · us-east")
