"""The command line as an operator meets it: fail fast with one line, migrate, the sandbox."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import httpx

import migrations
from bot.__main__ import parser
from bot.db import schema
from bot.db.engine import create_engine
from bot.sandbox.gateways import MODES
from bot.sandbox.servers import free_port
from bot.sandbox.slack_client import SlackUser
from bot.sandbox.world import Sandbox

from .conftest import ROOT
from .e2e.conftest import serve_environment, start_serve

CLEAN = {
    k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "DATABASE_URL", "FAILOVER_"))
}


def bot(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=ROOT,
        env={**CLEAN, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_serve_without_a_token_stops_with_one_line() -> None:
    done = bot("serve", env={"SLACK_SIGNING_SECRET": "s"})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "failover-bot: SLACK_BOT_TOKEN is not set: expected the bot token from the Slack app's "
        "OAuth page (xoxb-...)"
    ]


def test_serve_names_every_missing_setting_at_once_and_creates_no_database(
    tmp_path: Path,
) -> None:
    db = tmp_path / "failover.db"
    done = bot("serve", env={"DATABASE_URL": f"sqlite:///{db}"})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "failover-bot: SLACK_BOT_TOKEN is not set: expected the bot token from the Slack app's "
        "OAuth page (xoxb-...)",
        "failover-bot: SLACK_SIGNING_SECRET is not set: expected the signing secret from the "
        "Slack app's Basic Information page",
    ]
    assert not db.exists()


def test_socket_mode_asks_for_the_app_token_before_the_database(tmp_path: Path) -> None:
    # A database that could not even be opened: the missing token is what is said.
    env = {"SLACK_BOT_TOKEN": "xoxb-1", "DATABASE_URL": f"sqlite:///{tmp_path}/no/such/dir.db"}
    done = bot("serve", "--socket-mode", env=env)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "failover-bot: SLACK_APP_TOKEN is not set: expected an app-level token with "
        "connections:write (xapp-...)"
    ]


def test_a_refused_start_leaves_no_empty_database_file(tmp_path: Path) -> None:
    db = tmp_path / "failover.db"
    env = {
        "SLACK_BOT_TOKEN": "xoxb-1",
        "SLACK_SIGNING_SECRET": "s",
        "DATABASE_URL": f"sqlite:///{db}",
    }
    done = bot("serve", env=env)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"failover-bot: the database file {db} does not exist: run `failover-bot migrate` first"
    ]
    assert not db.exists()


def test_a_channel_name_is_refused_with_how_to_find_its_id() -> None:
    env = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "SLACK_CHANNEL": "#ops"}
    done = bot("serve", env=env)
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("failover-bot: SLACK_CHANNEL '#ops' is a channel name, not its id: ")
    assert "click the channel's name at the top of the channel" in line
    assert "the Channel ID is at the bottom of the About tab" in line


def test_serve_with_a_bad_topology_names_file_and_key(tmp_path: Path) -> None:
    config = tmp_path / "failover.toml"
    text = (ROOT / "failover.toml").read_text().replace('timeout = "5s"', 'timeout = "five"')
    config.write_text(text)
    env = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "FAILOVER_CONFIG": str(config)}
    done = bot("serve", env=env)
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"failover-bot: {config}: monitor.timeout: 'five' is not a duration")


def test_serve_refuses_an_unmigrated_database_then_migrate_fixes_it(tmp_path: Path) -> None:
    env = {
        "SLACK_BOT_TOKEN": "xoxb-1",
        "SLACK_SIGNING_SECRET": "s",
        "DATABASE_URL": f"sqlite:///{tmp_path}/bot.db",
    }
    done = bot("serve", env=env)
    assert done.returncode == 2
    assert "run `failover-bot migrate` first" in done.stderr
    migrated = bot("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.strip() == f"database schema at {migrations.HEAD}"
    down = bot("migrate", "--downgrade", "base", env=env)
    assert down.stdout.strip() == "database schema at base"


def test_check_with_nothing_set_lists_every_problem(tmp_path: Path) -> None:
    db = tmp_path / "failover.db"
    done = bot("check", env={"DATABASE_URL": f"sqlite:///{db}"})
    assert done.returncode == 2
    assert done.stdout.splitlines() == [
        "FAIL  SLACK_BOT_TOKEN is not set: expected the bot token from the Slack app's OAuth "
        "page (xoxb-...)",
        "FAIL  SLACK_SIGNING_SECRET is not set: expected the signing secret from the Slack app's "
        "Basic Information page",
        "note  SLACK_CHANNEL is not set: commands only, no watch and no alerts",
        "note  Cloudflare is not configured (CLOUDFLARE_API_TOKEN, CLOUDFLARE_ACCOUNT_ID, "
        "CLOUDFLARE_ZONE_ID): status from the probes alone; no drains or drills",
        "ok    failover.toml: 3 regions, 3 origins",
        "note  PagerDuty paging is off: set PAGERDUTY_ROUTING_KEY (or PAGERDUTY_ROUTING_KEYS per "
        "region) to page",
        f"FAIL  database sqlite:///{db}: {db} does not exist: run `failover-bot migrate` (it "
        "creates it)",
        "3 problems: fix them, then run `failover-bot check` again",
    ]
    assert not db.exists()


def test_check_passes_a_ready_environment_and_says_what_is_not_checked(tmp_path: Path) -> None:
    env = {
        "SLACK_BOT_TOKEN": "xoxb-1",
        "SLACK_SIGNING_SECRET": "s",
        "SLACK_CHANNEL": "C0123456789",
        "DATABASE_URL": f"sqlite:///{tmp_path}/bot.db",
    }
    assert bot("migrate", env=env).returncode == 0
    done = bot("check", env=env)
    assert done.returncode == 0, done.stdout
    lines = done.stdout.splitlines()
    assert "ok    SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET set (HTTP mode)" in lines
    assert (
        f"ok    database sqlite:///{tmp_path}/bot.db: schema at {migrations.HEAD}, as this bot "
        "needs" in lines
    )
    assert lines[-1] == (
        "ready: `failover-bot serve` has what it needs (add --online to ask Slack and "
        "Cloudflare too)"
    )
    socket = bot("check", "--socket-mode", env=env)
    assert socket.returncode == 2
    assert "FAIL  SLACK_APP_TOKEN is not set" in socket.stdout


def test_check_says_when_the_schema_is_behind(tmp_path: Path) -> None:
    env = {
        "SLACK_BOT_TOKEN": "xoxb-1",
        "SLACK_SIGNING_SECRET": "s",
        "DATABASE_URL": f"sqlite:///{tmp_path}/bot.db",
    }
    assert bot("migrate", env=env).returncode == 0
    assert bot("migrate", "--downgrade", "0001", env=env).returncode == 0
    done = bot("check", env=env)
    assert done.returncode == 2
    assert (
        f"FAIL  database sqlite:///{tmp_path}/bot.db: the database schema is at 0001 but this "
        f"bot needs {migrations.HEAD}: run `failover-bot migrate`"
    ) in done.stdout.splitlines()


def test_sandbox_prints_its_endpoints_first_and_serves_them() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "sandbox"],
        cwd=ROOT,
        env=CLEAN,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        endpoints = json.loads(proc.stdout.readline())
        assert set(endpoints["gateways"]) == {"us-east", "eu-west", "apac-sg"}
        eu = endpoints["gateways"]["eu-west"]
        with httpx.Client() as http:
            assert http.get(eu["url"] + "/health").json()["status"] == "healthy"
            http.post(eu["control"], json={"mode": "degraded", "check": "kv"}).raise_for_status()
            degraded = http.get(eu["url"] + "/health")
            assert degraded.status_code == 503 and degraded.json()["checks"]["kv"] == "error"
            auth = http.post(
                endpoints["slack"]["api_url"] + "auth.test",
                headers={"Authorization": f"Bearer {endpoints['slack']['bot_token']}"},
            )
            assert auth.json()["ok"] is True
            cf = endpoints["cloudflare"]
            pools = http.get(
                f"{cf['base_url']}/accounts/{cf['account_id']}/load_balancers/pools",
                headers={"Authorization": f"Bearer {cf['api_token']}"},
            ).json()
            assert pools["success"] and len(pools["result"]) == 3
            lbs = http.get(
                f"{cf['base_url']}/zones/{cf['zone_id']}/load_balancers",
                headers={"Authorization": f"Bearer {cf['api_token']}"},
            ).json()
            assert lbs["result"][0]["name"] == "api.erlvinc.com"
            user = http.get(endpoints["public"]["url"], headers={"X-Geo-Region": "SEAS"})
            # The body's region is the edge's data center; the header names who answered.
            assert user.json()["region"] == "SIN"
            assert user.headers["X-Gateway-Region"] == "apac-sg"
            assert set(endpoints["relays"]) == {"WNAM", "WEU", "SEAS"}
        config = Path(endpoints["config"]).read_text()
        assert eu["url"] in config
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_version_is_the_installed_package_version() -> None:
    done = bot("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"failover-bot {version('failover-bot')}"


def test_every_command_says_what_it_does_and_what_its_options_mean() -> None:
    top = bot("--help")
    assert top.returncode == 0
    assert "A Slack bot for the on-call engineers" in top.stdout
    assert "failover-bot migrate && failover-bot check --online && failover-bot serve" in top.stdout
    commands = next(
        a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)
    ).choices
    assert set(commands) >= {"serve", "migrate", "check", "discover", "relay", "sandbox", "demo"}
    for name, sub in commands.items():
        assert sub.description and len(sub.description) > 80, name
        undocumented = [a.dest for a in sub._actions if not a.help]
        assert undocumented == [], name
        shown = bot(name, "--help")
        assert shown.returncode == 0
        assert sub.description.split()[0] in shown.stdout, name


def test_notifications_help_points_at_the_check_of_the_policy() -> None:
    shown = bot("notifications", "--help")
    assert shown.returncode == 0
    assert "`failover-bot check --online` reports whether such a policy exists" in " ".join(
        shown.stdout.split()
    )


def test_the_readme_lists_the_consoles_break_modes() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    [listed] = re.findall(r"# modes: ([a-z ]+)", readme)
    assert listed.split() == list(MODES)


async def run_bot(*args: str, env: dict[str, str]) -> tuple[int, str]:
    """The CLI in its own process, while this test's event loop keeps the sandbox serving."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *args, cwd=ROOT, env={**CLEAN, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert b"Traceback" not in err, err.decode()
    return await proc.wait(), out.decode()


async def test_check_online_asks_slack_and_cloudflare(world: Sandbox, tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/bot.db"
    engine = create_engine(url)
    await schema.upgrade(engine)
    await engine.dispose()
    env = world.bot_environment(url)
    code, out = await run_bot("check", "--online", env=env)
    assert code == 0, out
    lines = out.splitlines()
    assert (
        "ok    Slack: SLACK_BOT_TOKEN is the bot @failover (U0FAILBOT) in workspace Sandbox "
        "(T0SANDBOX)"
    ) in lines
    assert "ok    Cloudflare: CLOUDFLARE_API_TOKEN is active" in lines
    assert (
        "ok    Cloudflare: load balancer api.erlvinc.com found, 3 pools and the monitor "
        "GET /health readable (`/failover check` holds them against failover.toml)"
    ) in lines
    assert "ok    Cloudflare: health events readable" in lines
    assert lines[-1] == "ready: `failover-bot serve` has what it needs"

    # A token without Analytics: Read works, with less: a note, not a problem.
    async with httpx.AsyncClient() as http:
        faults = f"{world.cloudflare.server.url}/_sandbox/faults"
        (await http.post(faults, json={"kind": "events_forbidden"})).raise_for_status()
        code, out = await run_bot("check", "--online", env=env)
        (await http.post(faults, json={"kind": "none"})).raise_for_status()
    assert code == 0, out
    assert "note  Cloudflare: the API token lacks Analytics: Read" in out

    # Tokens that Slack and Cloudflare refuse, and a hostname the zone does not have.
    config = tmp_path / "other.toml"
    config.write_text(world.config_path.read_text().replace("api.erlvinc.com", "other.example"))
    wrong = env | {"SLACK_BOT_TOKEN": "xoxb-wrong", "CLOUDFLARE_API_TOKEN": "wrong"}
    code, out = await run_bot("check", "--online", env=wrong)
    assert code == 2
    lines = out.splitlines()
    assert (
        "FAIL  Slack: SLACK_BOT_TOKEN was refused by Slack (invalid_auth): expected the Bot User "
        "OAuth Token of the installed app (xoxb-...)"
    ) in lines
    assert (
        "FAIL  Cloudflare rejected the API token while verifying the API token: check "
        "CLOUDFLARE_API_TOKEN"
    ) in lines
    code, out = await run_bot("check", "--online", env=env | {"FAILOVER_CONFIG": str(config)})
    assert code == 2
    assert "has no load balancer for other.example (it has: api.erlvinc.com)" in out


async def test_serve_logs_no_bolt_warning_and_no_secret_of_a_refused_request(
    world: Sandbox, tmp_path: Path
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/bot.db"
    engine = create_engine(url)
    await schema.upgrade(engine)
    await engine.dispose()
    port = free_port()
    env = {
        k: v
        for k, v in serve_environment(world, url, port).items()
        if not k.startswith("CLOUDFLARE_") and k != "SLACK_CHANNEL"  # the Slack path alone
    } | {"LOG_LEVEL": "INFO"}
    proc = await start_serve(env, stderr=asyncio.subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        user = SlackUser(f"{base}/slack/events", world.slack.url, world.signing_secret)
        assert (await user.command("help")).replies
        # Signed with another secret: refused, and whatever is logged of it tells no secret.
        forged = SlackUser(f"{base}/slack/events", world.slack.url, "not-the-signing-secret")
        assert (await forged.command("status", expect=0)).status == 401
        await user.aclose()
        await forged.aclose()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    assert proc.stderr is not None
    logged = (await proc.stderr.read()).decode()
    assert "`token` will be unused" not in logged
    assert "will be ignored" not in logged
    assert "legacy-verification-token" not in logged  # the form's `token`
    assert f"{world.slack.url}/response/" not in logged  # its response_url
