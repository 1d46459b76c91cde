"""Settings and dependencies that fail: the Cloudflare SDK's own environment, Slack's Web API out of
reach at a start, the database lost at runtime, and start errors told in one line."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from bot.access import Access
from bot.assembly import Bot, migrated_bot
from bot.cloudflare_api.cloudflare import CloudflareLoadBalancer
from bot.db import schema
from bot.db.engine import async_url, create_engine, database_error, ping
from bot.errors import ConfigError
from bot.fleet import AccessSettings
from bot.sandbox.servers import LocalServer, free_port
from bot.sandbox.slack_client import SlackUser
from bot.sandbox.world import Sandbox
from bot.settings import load_settings
from bot.slack.server import build_web_app

from .conftest import CONFIG, FAST, ROOT, eventually

# ------------------------------------------------------------------ Cloudflare's credentials


@pytest.mark.parametrize("name", ["CLOUDFLARE_EMAIL", "CLOUDFLARE_API_KEY"])
def test_a_global_key_variable_set_but_empty_is_refused(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    for var in ("CLOUDFLARE_API_TOKEN", "CLOUDFLARE_ACCOUNT_ID", "CLOUDFLARE_ZONE_ID"):
        monkeypatch.setenv(var, "set")
    monkeypatch.setenv(name, "")  # present, empty: the SDK would send it and fail every call
    with pytest.raises(ConfigError, match=rf"^{name} is set: unset it"):
        _ = load_settings().cloudflare_configured


@pytest.mark.parametrize(
    "environment",
    [
        {"CLOUDFLARE_EMAIL": "", "CLOUDFLARE_API_KEY": ""},
        {"CLOUDFLARE_EMAIL": "ops@example.com", "CLOUDFLARE_API_KEY": "a-global-key"},
        {"CLOUDFLARE_API_USER_SERVICE_KEY": "v1.0-origin-ca-key"},
    ],
    ids=["empty", "global-key", "service-key"],
)
async def test_the_token_is_the_sdks_only_credential_whatever_the_environment(
    world: Sandbox, monkeypatch: pytest.MonkeyPatch, environment: dict[str, str]
) -> None:
    """The SDK reads these itself and sends them before the token: an empty e-mail left it no
    credential (a TypeError on every call), a set one replaced the token."""
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    cf = world.cloudflare
    lb = CloudflareLoadBalancer(cf.token, cf.account_id, cf.zone_id, base_url=cf.base_url)
    try:
        pools = await lb.pools()
        assert len(pools) == 3
        # Restores go through a second client (no SDK retries): the same credential.
        pool = pools[0]
        assert (await lb.set_pool_enabled(pool.id, True)).enabled
    finally:
        await lb.aclose()


# ------------------------------------------------------------------ Slack's Web API


def _closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}/api/"  # nothing listens there


@pytest.mark.parametrize("outage", ["unreachable", "503"])
async def test_commands_are_answered_while_slacks_web_api_is_out_of_reach(
    world: Sandbox, tmp_path: Path, outage: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Bolt asked auth.test at each request until it succeeded: a connection error answered the
    command with HTTP 500, a 503 with "your installation is no longer available"."""
    settings = world.bot_settings(f"sqlite+aiosqlite:///{tmp_path}/bot.db")
    if outage == "unreachable":
        settings = settings.model_copy(update={"slack_api_url": _closed_port_url()})
    else:
        world.slack.down = True
    bot = await migrated_bot(settings)
    server = LocalServer(build_web_app(bot.slack, bot.engine))
    await server.start()
    user = SlackUser(f"{server.url}/slack/events", world.slack.url, world.signing_secret)
    try:
        await bot.verify_slack()  # as `serve` does: a warning, not a stop
        assert "could not check SLACK_BOT_TOKEN with Slack's Web API" in caplog.text
        asked_at_start = [c.method for c in world.slack.calls].count("auth.test")
        for text in ("help", "incidents"):
            exchange = await user.command(text)
            assert exchange.status == 200 and exchange.ack_body == ""
            [reply] = exchange.replies  # through the response URL, which needs no token
            assert "/failover" in reply["text"] or "No incidents" in reply["text"]
        # Not asked again per request: the start's answer (or its absence) stands.
        assert [c.method for c in world.slack.calls].count("auth.test") == asked_at_start
    finally:
        world.slack.down = False
        await user.aclose()
        await server.close()
        await bot.aclose()


async def test_the_token_is_checked_once_at_start(world: Sandbox, tmp_path: Path) -> None:
    settings = world.bot_settings(f"sqlite+aiosqlite:///{tmp_path}/bot.db")
    bot = await migrated_bot(settings)
    server = LocalServer(build_web_app(bot.slack, bot.engine))
    await server.start()
    user = SlackUser(f"{server.url}/slack/events", world.slack.url, world.signing_secret)
    try:
        await bot.verify_slack()
        for _ in range(3):
            assert (await user.command("help")).replies
        assert [c.method for c in world.slack.calls].count("auth.test") == 1
    finally:
        await user.aclose()
        await server.close()
        await bot.aclose()


async def test_a_token_slack_refuses_stops_the_start(world: Sandbox, tmp_path: Path) -> None:
    settings = world.bot_settings(f"sqlite+aiosqlite:///{tmp_path}/bot.db")
    bot = await migrated_bot(settings.model_copy(update={"slack_bot_token": "xoxb-revoked"}))
    try:
        with pytest.raises(ConfigError, match=r"^SLACK_BOT_TOKEN was refused by Slack \(invalid"):
            await bot.verify_slack()
    finally:
        await bot.aclose()


# ------------------------------------------------------------------ user groups


async def test_a_failing_user_group_costs_one_lookup_per_half_minute() -> None:
    calls: list[str] = []

    async def members(group: str) -> set[str]:
        calls.append(group)
        raise RuntimeError("usergroups.users.list: ratelimited")

    access = Access(AccessSettings(operators=["S0ONCALL"], approvers=[]), members)
    for _ in range(5):
        assert not await access.is_operator("U0ONCALL")  # refused, not guessed
    assert calls == ["S0ONCALL"]


# ------------------------------------------------------------------ the database, at runtime


@dataclass
class Lost:
    """A bot that watches and serves, and a way to take its database away and give it back."""

    world: Sandbox
    bot: Bot
    server: LocalServer
    user: SlackUser
    lose: Callable[[], Awaitable[None]]
    restore: Callable[[], Awaitable[None]]

    async def healthz(self) -> httpx.Response:
        async with httpx.AsyncClient() as http:
            return await http.get(f"{self.server.url}/healthz", timeout=5.0)

    async def leading(self) -> bool:
        assert self.bot.leadership is not None
        return self.bot.leadership.leading

    async def not_leading(self) -> bool:
        return not await self.leading()


async def _admin(sql: str) -> None:
    base = make_url(os.environ["TEST_DATABASE_URL"]).set(drivername="postgresql")
    conn = await asyncpg.connect(base.render_as_string(hide_password=False))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
async def lost(database_url: str, tmp_path: Path) -> AsyncIterator[Lost]:
    world = Sandbox(CONFIG, tmp_path, monitor_interval=1.0, propagation=0.5, watch=FAST)
    await world.start()
    bot = await migrated_bot(world.bot_settings(database_url), watch=True)
    server = LocalServer(build_web_app(bot.slack, bot.engine))
    await server.start()
    user = SlackUser(f"{server.url}/slack/events", world.slack.url, world.signing_secret)
    url = make_url(database_url)
    if url.get_backend_name() == "postgresql":
        name = url.database

        async def lose() -> None:  # what an operator's mistake or a failover of the server does
            await _admin(f'DROP DATABASE "{name}" WITH (FORCE)')

        async def restore() -> None:
            await _admin(f'CREATE DATABASE "{name}"')
            engine = create_engine(database_url)
            await schema.upgrade(engine)
            await engine.dispose()
    else:
        path = Path(str(url.database))
        away = path.with_suffix(".away")

        async def lose() -> None:
            # A directory where the file was: every new connection fails to open it.
            await asyncio.to_thread(path.rename, away)
            await asyncio.to_thread(path.mkdir)
            await bot.engine.dispose()

        async def restore() -> None:
            await asyncio.to_thread(path.rmdir)
            await asyncio.to_thread(away.rename, path)

    yield Lost(world, bot, server, user, lose, restore)
    await user.aclose()
    await server.close()
    await bot.aclose()
    await world.close()


WATCH_LOGGERS = ("bot.scheduler", "bot.alerts", "bot.watch", "bot.health", "commands.router")


async def test_the_database_lost_at_runtime(lost: Lost, caplog: pytest.LogCaptureFixture) -> None:
    await eventually(lost.leading, within=10)
    assert (await lost.healthz()).json() == {"ok": True, "database": "ok"}
    caplog.set_level(logging.INFO)
    caplog.clear()
    await lost.lose()

    # The user is told what is wrong, only them, with an id that is in the log.
    exchange = await lost.user.command("incidents")
    [reply] = exchange.replies
    assert reply["response_type"] == "ephemeral"
    assert reply["text"].startswith("The database is unavailable: ")
    assert "Something went wrong" not in reply["text"]
    error_id = re.search(r"Error id `([0-9a-f]+)`", reply["text"])
    assert error_id is not None and f"[error_id={error_id[1]}]" in caplog.text

    # /healthz says so, within about a second.
    health = await lost.healthz()
    assert health.status_code == 503
    assert health.json()["ok"] is False and health.json()["database"]

    # The lease cannot be renewed: leadership is dropped at once, not after its TTL (6 s).
    dropped = await eventually(lost.not_leading, within=4)
    assert dropped < 4
    await asyncio.sleep(6)  # six runs of each one-second job

    # One line per job and change of state; no tracebacks for a database that is away.
    watch = [r for r in caplog.records if r.name in WATCH_LOGGERS and r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in watch if r.exc_info] == []
    failing = Counter(
        m[1] for r in watch if (m := re.match(r"job (\w+) failing: the database", r.getMessage()))
    )
    assert failing["lease"] == 1 and set(failing.values()) == {1}, failing
    assert len(watch) <= len(failing) + 3  # the command, its audit row, the alert sender

    # Back: the lease is taken again and the commands answer.
    await lost.restore()
    await eventually(lost.leading, within=10)
    assert (await lost.healthz()).status_code == 200
    [again] = (await lost.user.command("incidents")).replies
    assert "database" not in again["text"]

    async def said_so() -> bool:  # once the renew that took the lease back has finished
        return "job lease works again" in caplog.text

    await eventually(said_so, within=5)


# ------------------------------------------------------------------ database URLs


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("postgres://u:p@db.example.com/bot?sslmode=require", "ssl=require"),
        ("postgresql://u@h/bot?sslmode=disable", "ssl=disable"),
        ("postgresql://u@h/bot?sslmode=verify-full", "ssl=verify-full"),
    ],
)
def test_sslmode_becomes_asyncpgs_ssl(given: str, used: str) -> None:
    converted = async_url(given)
    assert converted.startswith("postgresql+asyncpg://") and converted.endswith(f"?{used}")


def test_a_bad_sslmode_is_named() -> None:
    with pytest.raises(ConfigError, match=r"^DATABASE_URL has sslmode='on': expected one of"):
        async_url("postgresql://u@h/bot?sslmode=on")


async def test_sslmode_from_a_managed_service_connects() -> None:
    base = os.environ.get("TEST_DATABASE_URL")
    if not base:
        pytest.skip("needs a PostgreSQL server: set TEST_DATABASE_URL")
    engine = create_engine(f"{base}?sslmode=disable")  # the local server speaks no TLS
    try:
        assert await ping(engine, within=5.0) is None  # asyncpg got ssl=, not a TypeError
    finally:
        await engine.dispose()


def test_an_unparsable_url_is_shown_without_its_password() -> None:
    with pytest.raises(ConfigError) as caught:
        async_url("postgres://bot:s3cret@db.example.com:fivefourthree/bot")
    assert "s3cret" not in str(caught.value) and "bot:***@" in str(caught.value)


# ------------------------------------------------------------------ start errors, as the CLI


CLEAN = {
    k: v
    for k, v in os.environ.items()
    if not k.startswith(("SLACK_", "DATABASE_URL", "FAILOVER_", "CLOUDFLARE_", "PORT"))
}
SERVE = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s"}


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=ROOT,
        env={**CLEAN, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The exit status is 2 and stderr holds exactly one line, with no traceback."""
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("failover-bot: ")
    return lines[0]


def test_an_unreachable_database_is_one_line_without_its_password() -> None:
    url = f"postgresql://bot:s3cret@127.0.0.1:{free_port()}/bot"
    line = one_line(cli("serve", env=SERVE | {"DATABASE_URL": url}))
    assert "s3cret" not in line
    assert line == (
        f"failover-bot: DATABASE_URL postgresql://bot:***@127.0.0.1:{make_url(url).port}/bot "
        "cannot be used: connection refused"
    )
    assert one_line(cli("migrate", env={"DATABASE_URL": url})) == line


def test_a_missing_database_is_one_line() -> None:
    base = os.environ.get("TEST_DATABASE_URL")
    if not base:
        pytest.skip("needs a PostgreSQL server: set TEST_DATABASE_URL")
    url = make_url(base).set(password="s3cret", database="failover_never_created")
    url_text = url.render_as_string(hide_password=False)
    line = one_line(cli("serve", env=SERVE | {"DATABASE_URL": url_text}))
    assert "s3cret" not in line
    assert line.endswith('cannot be used: database "failover_never_created" does not exist')


async def test_a_read_only_sqlite_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    await schema.upgrade(engine)
    await engine.dispose()
    # Opened read-only, as SQLite opens a file it may not write (chmod is no test as root).
    url = f"sqlite:///file:{path}?mode=ro&uri=true"
    line = one_line(cli("serve", env=SERVE | {"DATABASE_URL": url}))
    assert line == (
        f"failover-bot: DATABASE_URL {url} cannot be used: attempt to write a readonly database"
    )
    with sqlite3.connect(path) as db:  # the probe's write was rolled back
        assert db.execute("SELECT count(*) FROM alembic_version").fetchone() == (1,)
    down = cli("migrate", "--downgrade", "base", env={"DATABASE_URL": url})
    assert down.returncode == 2 and "Traceback" not in down.stderr
    assert down.stderr.strip().splitlines()[-1].endswith("attempt to write a readonly database")


async def test_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    await schema.upgrade(engine)
    await engine.dispose()
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = SERVE | {"DATABASE_URL": f"sqlite:///{path}", "PORT": str(port)}
        line = await asyncio.to_thread(lambda: one_line(cli("serve", env=env)))
    assert line.startswith(f"failover-bot: PORT {port} cannot be listened on (")
    assert line.endswith("stop what uses it, or set PORT to a free port")


def test_a_missing_script_is_one_line(tmp_path: Path) -> None:
    script = tmp_path / "nowhere.txt"
    assert one_line(cli("demo", "--script", str(script))) == (
        f"failover-bot: --script {script}: no such file"
    )


def test_a_bad_downgrade_revision_is_one_line(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/bot.db"}
    assert cli("migrate", env=env).returncode == 0
    assert one_line(cli("migrate", "--downgrade", "nope", env=env)) == (
        "failover-bot: --downgrade nope: Can't locate revision identified by 'nope'"
    )


async def test_a_bug_in_sql_is_not_called_an_unavailable_database(
    migrated_url: str, tmp_path: Path
) -> None:
    """Unavailable is told in one line; the bot's own mistakes keep their tracebacks."""
    engine = create_engine(migrated_url)
    try:
        async with engine.connect() as conn:
            with pytest.raises(Exception) as caught:
                await conn.execute(text("SELECT no_such_column FROM alembic_version"))
        assert database_error(caught.value) is None
    finally:
        await engine.dispose()
    gone = create_engine(f"sqlite+aiosqlite:///{tmp_path}/no/such/dir.db")
    try:
        with pytest.raises(Exception) as caught:
            async with gone.connect():
                pass
        assert database_error(caught.value) == "unable to open database file"
    finally:
        await gone.dispose()
