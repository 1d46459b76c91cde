"""Shared fixtures: the topology, the sandbox world, databases, and a bot served over HTTP."""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from bot.assembly import Bot, migrated_bot
from bot.db import schema
from bot.db.engine import create_engine
from bot.fleet import Fleet, load_fleet
from bot.sandbox.dataplane import GEO_HEADER, POOL_HEADER
from bot.sandbox.servers import LocalServer
from bot.sandbox.slack_client import SlackUser
from bot.sandbox.world import Sandbox
from bot.settings import Settings
from bot.slack.server import build_web_app

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "failover.toml"
# The seed's load balancer exactly as the seed writes it: one pool per geo region.
SEED_LITERAL = ROOT / "tests" / "fixtures" / "seed-literal.toml"


@pytest.fixture(autouse=True)
def _root_logging_kept() -> Iterator[None]:
    """A test that runs ``main()`` configures the root logger onto its captured stderr; what a
    later test logs must not go to that closed stream, nor miss pytest's own capture."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def fleet() -> Fleet:
    return load_fleet(CONFIG)


@pytest.fixture
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Sandbox]:
    """A fast world: Cloudflare's monitor checks every second, changes propagate in half a second.

    On failover.toml; the fixture's parameter (indirect) may name another topology, or be a
    dict of ``config`` and ``monitor_interval``.
    """
    options = getattr(request, "param", {})
    options = options if isinstance(options, dict) else {"config": options}
    sandbox = Sandbox(
        options.get("config", CONFIG),
        tmp_path,
        monitor_interval=options.get("monitor_interval", 1.0),
        propagation=0.5,
    )
    await sandbox.start()
    yield sandbox
    await sandbox.close()


async def _postgres_database() -> tuple[str, str] | None:
    """A throwaway database on TEST_DATABASE_URL's server: (its URL, its name)."""
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        return None
    base = make_url(url).set(drivername="postgresql")
    name = f"failover_t_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(base.render_as_string(hide_password=False))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return base.set(database=name).render_as_string(hide_password=False), name


async def _drop_postgres_database(name: str) -> None:
    base = make_url(os.environ["TEST_DATABASE_URL"]).set(drivername="postgresql")
    conn = await asyncpg.connect(base.render_as_string(hide_password=False))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database: a SQLite file, and PostgreSQL where TEST_DATABASE_URL names a server."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/test.db"
        return
    made = await _postgres_database()
    if made is None:
        if os.environ.get("REQUIRE_POSTGRES"):
            pytest.fail("REQUIRE_POSTGRES is set but TEST_DATABASE_URL is not")
        pytest.skip("PostgreSQL case: set TEST_DATABASE_URL to run it (CI does)")
    url, name = made
    yield url
    await _drop_postgres_database(name)


@pytest.fixture
async def migrated_url(database_url: str) -> str:
    engine = create_engine(database_url)
    await schema.upgrade(engine)
    await engine.dispose()
    return database_url


@dataclass
class Served:
    bot: Bot
    world: Sandbox
    server: LocalServer
    user: SlackUser

    @property
    def events_url(self) -> str:
        return f"{self.server.url}/slack/events"


def sandbox_settings(world: Sandbox, database_url: str) -> Settings:
    return world.bot_settings(database_url)


@pytest.fixture
async def served(world: Sandbox, tmp_path: Path) -> AsyncIterator[Served]:
    """The bot on the sandbox, over HTTP, on a migrated SQLite file."""
    bot = await migrated_bot(sandbox_settings(world, f"sqlite+aiosqlite:///{tmp_path}/bot.db"))
    server = LocalServer(
        build_web_app(bot.slack, bot.engine, settings=bot.settings, webhooks=bot.webhooks)
    )
    await server.start()
    user = SlackUser(f"{server.url}/slack/events", world.slack.url, world.signing_secret)
    yield Served(bot, world, server, user)
    await user.aclose()
    await server.close()
    await bot.aclose()


async def edge(world: Sandbox, geo: str) -> tuple[int, str | None]:
    """Ground truth from the sandbox's data plane: (status, pool that served) for a user in
    ``geo``. It routes by Cloudflare's documentation, not by the bot's code."""
    async with httpx.AsyncClient() as http:
        resp = await http.get(f"{world.dataplane.url}/health", headers={GEO_HEADER: geo})
    return resp.status_code, resp.headers.get(POOL_HEADER)


async def eventually(
    predicate: Callable[[], Awaitable[bool]], within: float, every: float = 0.1
) -> float:
    """Seconds until ``predicate`` holds; fails the test if it does not within ``within`` s."""
    started = time.monotonic()
    while not await predicate():
        if time.monotonic() - started > within:
            pytest.fail(f"condition not met within {within} s")
        await asyncio.sleep(every)
    return time.monotonic() - started


FAST = {
    "probe_interval": "1s",
    "cloudflare_poll": "1s",
    "settle": "3s",
    "rto_alert": "6s",
    "flap_window": "10s",
    "lease_ttl": "6s",
}


@pytest.fixture
async def watching(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Sandbox, Bot]]:
    """A fast sandbox with a bot that watches (the lease holder), not served over HTTP; on
    failover.toml or on the topology given as the fixture's parameter (indirect)."""
    config = getattr(request, "param", CONFIG)
    world = Sandbox(config, tmp_path, monitor_interval=1.0, propagation=0.5, watch=FAST)
    await world.start()
    settings = world.bot_settings(f"sqlite+aiosqlite:///{tmp_path}/watch.db")
    bot = await migrated_bot(settings, watch=True)
    yield world, bot
    await bot.aclose()
    await world.close()
