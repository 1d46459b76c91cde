"""Three instances on one PostgreSQL: any answers, one leads; kill the leader, another goes on."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bot.db import schema
from bot.db.engine import create_engine, sessionmaker
from bot.db.models import Lease, Operation
from bot.sandbox.render import render_message
from bot.sandbox.servers import free_port
from bot.sandbox.slack_client import SlackUser
from bot.sandbox.world import CHANNEL, Sandbox

from ..conftest import CONFIG, FAST, _drop_postgres_database, _postgres_database, eventually
from .conftest import serve_environment, start_serve

TTL = 3.0
PROBE_INTERVAL = 1.0


@dataclass
class Cluster:
    world: Sandbox
    url: str
    procs: dict[int, asyncio.subprocess.Process]  # by port
    env: dict[str, str]

    async def start(self) -> int:
        port = free_port()
        self.procs[port] = await start_serve(self.env | {"PORT": str(port)})
        return port

    async def holder(self) -> str | None:
        engine = create_engine(self.url)
        try:
            async with sessionmaker(engine)() as session:
                lease = await session.get(Lease, "leader")
                now = await session.scalar(select(func.now()))
                return lease.holder if lease and now and lease.expires_at > now else None
        finally:
            await engine.dispose()

    async def leader_port(self) -> int:
        holder = await self.holder()
        assert holder is not None
        pid = int(holder.split(":")[1])
        return next(port for port, p in self.procs.items() if p.pid == pid)

    def user(self, port: int) -> SlackUser:
        return SlackUser(
            f"http://127.0.0.1:{port}/slack/events", self.world.slack.url, self.world.signing_secret
        )


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    made = await _postgres_database()
    if made is None:
        if os.environ.get("REQUIRE_POSTGRES"):
            pytest.fail("REQUIRE_POSTGRES is set but TEST_DATABASE_URL is not")
        pytest.skip("several instances need PostgreSQL: set TEST_DATABASE_URL (CI does)")
    url, name = made
    engine = create_engine(url)
    await schema.upgrade(engine)
    await engine.dispose()
    world = Sandbox(
        CONFIG, tmp_path, monitor_interval=1.0, propagation=0.5,
        watch=FAST | {"lease_ttl": f"{TTL:g}s", "probe_interval": f"{PROBE_INTERVAL:g}s"},
        operations={"drill_hold": "60s"},
    )  # fmt: skip
    await world.start()
    env = serve_environment(world, url, 0)
    c = Cluster(world, url, {}, env)
    try:
        for _ in range(3):
            await c.start()
        await eventually(lambda: _some(c.holder()), within=10)
        yield c
    finally:
        for proc in c.procs.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGKILL)
                await proc.wait()
        await world.close()
        await _drop_postgres_database(name)


async def _some(value: object) -> bool:
    return (await value) is not None  # type: ignore[misc]


def mains(world: Sandbox) -> list[dict[str, object]]:
    return [m for m in world.slack.channels.get(CHANNEL, []) if "thread_ts" not in m]


async def test_any_instance_answers_and_the_leader_is_replaced_during_an_incident(
    cluster: Cluster,
) -> None:
    world = cluster.world
    for port in cluster.procs:  # every instance answers commands
        user = cluster.user(port)
        [reply] = (await user.command("status us-east")).replies
        await user.aclose()
        assert "us-east (primary)" in render_message(reply)
    await world.gateways["us-east"].set_mode("down")
    await eventually(lambda: _true(bool(mains(world))), within=15)
    leader = await cluster.leader_port()
    old = await cluster.holder()
    cluster.procs[leader].send_signal(signal.SIGKILL)
    await cluster.procs[leader].wait()
    killed = time.monotonic()

    async def new_leader() -> bool:
        holder = await cluster.holder()
        return holder is not None and holder != old

    await eventually(new_leader, within=TTL + PROBE_INTERVAL + 5)
    took = time.monotonic() - killed
    assert took <= TTL + PROBE_INTERVAL + 2, took  # within the TTL plus one interval (+2 s margin)
    await world.gateways["us-east"].set_mode("healthy")

    async def resolved() -> bool:
        return any(render_message(m).startswith("✅ Incident #1 · RESOLVED") for m in mains(world))

    await eventually(resolved, within=30)
    assert len(mains(world)) == 1  # the same message went on being updated by the new leader
    replies = [render_message(m) for m in world.slack.channels[CHANNEL] if "thread_ts" in m]
    assert len(replies) == len(set(replies)), replies  # no alert posted twice


async def test_a_drill_is_rolled_back_by_the_next_leader_and_sigterm_gives_up_the_lease(
    cluster: Cluster,
) -> None:
    world = cluster.world
    leader = await cluster.leader_port()
    user = cluster.user(
        next(p for p in cluster.procs if p != leader)
    )  # any instance takes commands
    [proposal] = (await user.command("drill eu-west")).replies
    button = next(
        e
        for b in proposal["blocks"]
        if b["type"] == "actions"
        for e in b["elements"]
        if "Drill" in e["text"]["text"]
    )
    await user.click(button["action_id"], button["value"])
    await user.aclose()
    engine = create_engine(cluster.url)

    async def state() -> str | None:
        async with sessionmaker(engine)() as session:
            op = (await session.scalars(select(Operation))).first()
            return op.state if op else None

    try:
        await eventually(lambda: _eq(state(), "holding"), within=20)
        cluster.procs[leader].send_signal(signal.SIGKILL)
        await cluster.procs[leader].wait()
        eu = next(p for p in world.cloudflare.pools.values() if p["name"] == "foundation-eu-west")
        await eventually(lambda: _true(eu["enabled"] is True), within=TTL + PROBE_INTERVAL + 10)
        await eventually(lambda: _eq(state(), "interrupted"), within=10)
        # SIGTERM: a clean stop gives the lease up at once rather than letting it expire.
        leader = await cluster.leader_port()
        cluster.procs[leader].send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(cluster.procs[leader].wait(), 15) == 0
        released = time.monotonic()
        await eventually(lambda: _some(cluster.holder()), within=TTL + 2)
        assert time.monotonic() - released < TTL + 2
    finally:
        await engine.dispose()


async def _true(value: bool) -> bool:
    return value


async def _eq(value: object, expected: object) -> bool:
    return bool((await value) == expected)  # type: ignore[misc]
