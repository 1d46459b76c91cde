"""The demo's console as a person meets it: at a terminal, pasted into, piped, anywhere."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from ..conftest import ROOT, SEED_LITERAL


def environment(**extra: str) -> dict[str, str]:
    """This machine's environment, less any bot settings, plus ``extra``."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLACK_", "CLOUDFLARE_")) and k != "FAILOVER_CONFIG"
    }
    return clean | extra


def demo(
    *args: str, stdin: str = "", cwd: Path = ROOT, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", "demo", *args],
        cwd=cwd,
        env=environment(**env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_pasted_lines_lose_their_prompt_and_comments_and_are_echoed() -> None:
    pasted = (
        "failover> /failover status   # all of it\n"
        "failover> wait 0.1           # a pause\n"
        "/failover drill report #2\n"  # `#2` is a number, not a comment
    )
    done = demo(stdin=pasted)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "(demo:" not in out and "Unknown region" not in out
    assert "✅ all healthy" in out  # the comment did not reach the bot
    assert "There is no drill #2. No drill has run yet." in out
    # Piped input reads like a session: each line after the prompt, once.
    assert out.count("failover> /failover status   # all of it\n") == 1
    assert "failover> wait 0.1           # a pause\n" in out
    assert "failover> /failover drill report #2\n" in out
    assert "failover> failover>" not in out


def test_a_piped_line_not_understood_fails_the_run() -> None:
    done = demo(stdin="wait soon\n/failover help\n")
    assert done.returncode == 1
    assert "(demo: wait takes seconds, up to 3600 (got 'soon'))" in done.stdout
    assert "/failover status [region] [public]" in done.stdout  # it went on


class Terminal:
    """The demo on a pseudo-terminal, as a person at a keyboard has it."""

    def __init__(self) -> None:
        import pty

        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the demo, with the pty as its controlling terminal
            # Ctrl-C as at a shell's prompt, even when these tests run where SIGINT is ignored
            # (a shell's background job): an ignored SIGINT stays ignored across exec.
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.chdir(ROOT)
            env = environment(TERM="xterm")
            os.execve(sys.executable, [sys.executable, "-m", "bot", "demo"], env)
        self.seen = b""
        self.status: int | None = None

    def read_until(self, text: str, within: float, count: int = 1) -> bool:
        deadline = time.monotonic() + within
        while self.seen.count(text.encode()) < count and time.monotonic() < deadline:
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            if ready:
                try:
                    self.seen += os.read(self.fd, 65536)
                except OSError:  # the child has gone
                    break
        return self.seen.count(text.encode()) >= count

    def type(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def run(self, keys: str, expect: str, within: float = 20) -> None:
        """Type ``keys``, then wait for ``expect`` and the next prompt after it (typing ahead
        of the prompt would test the terminal's type-ahead, not the console)."""
        start = len(self.seen)
        self.type(keys)
        deadline = time.monotonic() + within
        while True:
            after = self.seen[start:]
            at = after.find(expect.encode())
            if at >= 0 and b"failover> " in after[at:]:
                return
            assert time.monotonic() < deadline, self.seen.decode(errors="replace")
            self.read_until("\0never", 0.1)

    def exited(self, within: float) -> int | None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
                return self.status
            self.read_until("\0never", 0.1)
        return None

    def close(self) -> None:
        if self.status is None:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        os.close(self.fd)


HELP_LINE = "/failover status [region] [public]"


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
@pytest.mark.timeout(90)
def test_at_a_terminal_lines_are_edited_recalled_stopped_and_ctrl_c_leaves() -> None:
    pytest.importorskip("readline", reason="line editing comes from readline where it is built")
    term = Terminal()
    try:
        assert term.read_until("failover> ", 40), term.seen.decode(errors="replace")
        # Typed with a letter missing, the cursor moved back three places, the letter put in.
        term.run("/failover elp\x1b[D\x1b[D\x1b[Dh\r", HELP_LINE)
        term.run("\x1b[A\r", HELP_LINE)  # up: the line before, again
        # Ctrl-C stops a command that runs and gives the prompt back ...
        term.type("wait 60\r")
        assert term.read_until("wait 60", 10), term.seen.decode(errors="replace")
        time.sleep(1)  # waiting
        term.run("\x03", "(stopped)")
        # ... and at the prompt, leaves at once, without an error.
        time.sleep(0.3)  # as a person would: not in the microseconds before input() waits
        term.type("\x03")
        assert term.exited(within=15) == 0, term.seen.decode(errors="replace")
    finally:
        term.close()
    assert b"not understood" not in term.seen


def test_demo_and_sandbox_mirror_FAILOVER_CONFIG() -> None:
    done = demo(stdin="/failover whatif us-east\n", FAILOVER_CONFIG=str(SEED_LITERAL))
    assert done.returncode == 0, done.stderr
    # The seed's literal configuration gives North America no failover; failover.toml does.
    assert "WNAM ENAM NSAM SSAM: no failover" in done.stdout
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "sandbox"],
        cwd=ROOT,
        env=environment(FAILOVER_CONFIG=str(SEED_LITERAL)),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        endpoints = json.loads(proc.stdout.readline())
        written = tomllib.loads(Path(endpoints["config"]).read_text(encoding="utf-8"))
        assert written["load_balancer"]["region_pools"]["WNAM"] == ["us-east"]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)


def test_a_named_topology_that_is_missing_is_one_line() -> None:
    done = demo(stdin="", FAILOVER_CONFIG="/nowhere/failover.toml")
    assert done.returncode == 2
    assert done.stderr == "failover-bot: FAILOVER_CONFIG=/nowhere/failover.toml: file not found\n"
    done = demo("--config", "nowhere.toml", stdin="")
    assert done.returncode == 2
    assert done.stderr == "failover-bot: --config nowhere.toml: file not found\n"


def test_without_failover_toml_the_demo_runs_on_the_packaged_seed(tmp_path: Path) -> None:
    done = demo(stdin="/failover status\n", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "running on the seed's topology, packaged with the bot" in done.stderr
    assert "✅ all healthy" in done.stdout
    assert "us-east (primary)" in done.stdout
