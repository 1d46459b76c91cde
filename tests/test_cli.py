"""The command line as an operator meets it: fail fast with one line, migrate, the sandbox."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from .conftest import ROOT

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
    done = bot("serve")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "failover-bot: SLACK_BOT_TOKEN is not set: expected the bot token from the Slack app's "
        "OAuth page (xoxb-...)"
    ]


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
    assert migrated.stdout.strip() == "database schema at 0004"
    down = bot("migrate", "--downgrade", "base", env=env)
    assert down.stdout.strip() == "database schema at base"


def test_check_validates_the_topology() -> None:
    done = bot("check")
    assert done.returncode == 0
    assert done.stdout.strip() == "failover.toml: 3 regions, 3 origins: ok"


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
