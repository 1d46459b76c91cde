"""Every text a user can type gets a short, helpful answer: never an error id, never a traceback."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.access import Access
from bot.db import schema
from bot.db.engine import create_engine, sessionmaker
from bot.fleet import Fleet, load_fleet
from bot.fleetstatus import FleetStatus, RegionStatus
from bot.incidents import Incidents
from bot.invocation import Invocation
from bot.monitor import PoolState
from bot.records import IncidentRecords
from bot.silences import Silences
from bot.status import StatusService
from commands.base import Services
from commands.router import Router

from .conftest import CONFIG

FLEET = load_fleet(CONFIG)
WORDS = [
    "status", "help", "check", "drain", "restore", "drains", "drill", "drills", "incidents",
    "timeline", "note", "silence", "silences", "unsilence", "us-east", "eu-west", "apac-sg",
    "public", "--for", "--origin", "--dry-run", "--break-glass", "--at", "extend", "cancel",
    "report", "markdown", "2h", "0s", "99999h", "no-healthy-pool", "#1", "-1", "\u2014for",
    "\u201ceu-west\u201d", "<@U123|bob>", "<#C1|ops>", "<https://x.example|x>", "&lt;", "\"", "'",
]  # fmt: skip


class NoProbes(StatusService):
    """Every region unknown, at once: the fuzz is about words, not about probes."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    async def check(self, regions: list[str] | None = None) -> FleetStatus:
        chosen = [self.fleet.regions[n] for n in (regions or list(self.fleet.regions))]
        states = [RegionStatus(r, PoolState.UNKNOWN, []) for r in chosen]
        return FleetStatus(self.fleet, states, datetime.now(UTC), 0.0)


class Audit:
    async def record_command(self, *args: object) -> None:
        return None


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Router]:
    """A router on a migrated SQLite file; no Cloudflare, no operators configured."""
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('fuzz')}/fuzz.db"

    async def migrate() -> None:
        engine = create_engine(url)
        await schema.upgrade(engine)
        await engine.dispose()

    asyncio.run(migrate())
    engine = create_engine(url)
    services = Services(
        FLEET,
        NoProbes(FLEET),
        records=IncidentRecords(
            FLEET, sessionmaker(engine), Incidents(FLEET, "C1"), lambda: datetime.now(UTC)
        ),
        silences=Silences(sessionmaker(engine), lambda: datetime.now(UTC)),
        access=Access(FLEET.access),
    )
    yield Router(services, Audit())
    asyncio.run(engine.dispose())


texts = st.one_of(
    st.text(max_size=300),
    st.lists(st.sampled_from(WORDS), max_size=8).map(" ".join),
    st.lists(st.one_of(st.sampled_from(WORDS), st.text(max_size=12)), max_size=10).map(" ".join),
    st.text(min_size=3000, max_size=5000),
)


@settings(
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(text=texts)
async def test_any_text_gets_a_short_helpful_answer(router: Router, text: str) -> None:
    reply = await router.handle(Invocation(user_id="U1", text=text))
    assert reply.outcome in ("ok", "rejected"), (text, reply.text)  # "error" would mean a crash
    assert "Traceback" not in reply.text
    assert len(reply.text) < 4000
    for block in reply.block_dicts():
        section = block.get("text", {}).get("text", "")
        assert len(section) <= 3000
