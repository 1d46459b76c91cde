"""The watch's attribution of traffic moves: what a drain or a drill moved goes to its thread and
opens no incident; every other move is a real event.

A move is an operation's when it matches the blast radius stored with it (same home region, same
destination, served or not as predicted), from its change until ``operations.settle`` after it
finished. The watch reads the fake load balancer as it reads Cloudflare.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.engine import create_engine, sessionmaker
from bot.db.models import Operation
from bot.fleet import Fleet, Targets
from bot.incidents import Incidents
from bot.monitor import Event, EventKind
from bot.operations import run
from bot.operations.detail import OperationDetail
from bot.operations.drain import DrainDriver
from bot.operations.run import Drills
from bot.operations.state import OpState
from bot.operations.workflow import Operations
from bot.planned import planned_view
from bot.safety import Proposal, after_change, blast_radius
from bot.watch import Watch, _caused

from .fakes import T0, FakeLoadBalancer, ListClock, RecordingNotifier, UsersView
from .reading import incidents, operation, phases, timeline

EU_GEOS = "WEU EEU ME NAF SAF"
TO_US = f"Cloudflare sends {EU_GEOS} to us-east"
BACK_HOME = f"Cloudflare sends {EU_GEOS} to eu-west again"


@dataclass
class World:
    fleet: Fleet
    sessions: async_sessionmaker[AsyncSession]
    clock: ListClock
    lb: FakeLoadBalancer
    ops: Operations
    drains: DrainDriver
    watch: Watch
    channel: RecordingNotifier

    async def read(self, after: float = 1) -> None:
        """The watch reads Cloudflare (every ``cloudflare_poll``), ``after`` seconds on."""
        self.clock.advance(after)
        await self.watch.poll_cloudflare()

    async def drive(self, after: float = 1) -> None:
        self.clock.advance(after)
        await self.drains.drive(self.channel)

    async def drained(self, region: str = "eu-west") -> int:
        """A drain of ``region`` confirmed and applied; the watch has read it."""
        proposed = await self.ops.propose(
            Proposal("drain", region), "maintenance", "U0OPERATOR", length=3600
        )
        assert proposed.operation is not None
        await self.ops.confirm(proposed.operation.id, "U0OPERATOR")
        await self.drive()
        assert not self.lb.enabled(region)
        await self.read()
        return proposed.operation.id

    async def traffic(self, op_id: int) -> list[str]:
        """The traffic moves put in the operation's journal."""
        return [text for phase, text in await phases(self.sessions, op_id) if phase == "traffic"]

    async def incident_timeline(self) -> list[str]:
        found = await incidents(self.sessions)
        assert len(found) == 1, "one incident opened"
        return await timeline(self.sessions, found[0].id)


@pytest.fixture
async def world(fleet: Fleet, migrated_url: str) -> AsyncIterator[World]:
    engine = create_engine(migrated_url)
    sessions = sessionmaker(engine)
    clock = ListClock()
    lb = FakeLoadBalancer(fleet, clock)
    watch = Watch(fleet, sessions, Incidents(fleet, "C0ALERTS"), lb, clock)
    w = World(
        fleet,
        sessions,
        clock,
        lb,
        Operations(fleet, sessions, lb, clock, "C0OPS"),
        DrainDriver(fleet, sessions, lb, clock),
        watch,
        RecordingNotifier(clock),
    )
    await w.read(after=0)  # where every geo region is served when all is well
    yield w
    await engine.dispose()


async def test_a_drains_moves_go_to_its_thread_and_open_no_incident(world: World) -> None:
    op_id = await world.drained()
    assert await world.traffic(op_id) == [TO_US]
    await world.drive()  # the driver posts what the journal owes
    assert TO_US in world.channel.notes()

    await world.ops.restore("eu-west", "U0OPERATOR")
    await world.drive()
    await world.read()  # re-enabled, not checked yet: still on us-east, nothing new
    world.lb.set_health("eu-west", True)
    await world.read()
    assert await world.traffic(op_id) == [TO_US, BACK_HOME]
    await world.drive()
    assert (await operation(world.sessions, op_id)).state == "restored"
    assert world.channel.notes()[-2:] == [
        BACK_HOME,
        f"serves {EU_GEOS} again, 3 s after the restore",
    ]
    assert await incidents(world.sessions) == []


async def test_a_move_to_another_destination_is_real(world: World) -> None:
    op_id = await world.drained()
    world.lb.set_health("us-east", False)  # where the drain sent eu-west's users fails
    await world.read()
    assert await world.traffic(op_id) == [TO_US]
    assert "FailoverTriggered eu-west" in await world.incident_timeline()  # now to apac-sg


async def test_users_left_without_a_healthy_pool_are_real_where_a_failover_was_predicted(
    world: World,
) -> None:
    op_id = await world.drained()
    world.lb.set_health("us-east", False)
    world.lb.set_health("apac-sg", False)
    await world.read()  # eu-west's users are sent to the fallback us-east, unhealthy
    assert await world.traffic(op_id) == [TO_US]
    assert "NoHealthyPool eu-west" in await world.incident_timeline()


async def test_a_move_of_another_region_is_real(world: World) -> None:
    op_id = await world.drained()
    world.lb.set_health("apac-sg", False)
    await world.read()
    assert await world.traffic(op_id) == [TO_US]
    assert "FailoverTriggered apac-sg" in await world.incident_timeline()


@pytest.mark.parametrize(("after_finish", "attributed"), [(-1, True), (1, False)])
async def test_moves_are_the_drains_until_settle_after_it_finished(
    world: World, fleet: Fleet, after_finish: float, attributed: bool
) -> None:
    op_id = await world.drained()
    await world.ops.restore("eu-west", "U0OPERATOR")
    await world.drive()
    world.lb.set_health("eu-west", True)
    await world.read()
    await world.drive()
    finished = (await operation(world.sessions, op_id)).finished_at
    assert finished == world.clock()
    world.lb.set_health("eu-west", False)  # the pool fails for real after the drain
    await world.read(after=fleet.operations.settle + after_finish)
    if attributed:
        assert await world.traffic(op_id) == [TO_US, BACK_HOME, TO_US]
        assert await incidents(world.sessions) == []
    else:
        assert await world.traffic(op_id) == [TO_US, BACK_HOME]
        assert "FailoverTriggered eu-west" in await world.incident_timeline()


@pytest.mark.parametrize("how", ["pending", "cancelled", "blocked drill"])
async def test_an_operation_that_changed_nothing_attributes_nothing(
    world: World, fleet: Fleet, how: str
) -> None:
    kind = "drill" if how == "blocked drill" else "drain"
    proposed = await world.ops.propose(Proposal(kind, "eu-west"), "planned", "U0OPERATOR")
    assert proposed.operation is not None
    op_id = proposed.operation.id
    if how == "cancelled":
        await world.ops.cancel(op_id, "U0OPERATOR")
    elif how == "blocked drill":
        await world.ops.confirm(op_id, "U0OPERATOR")
        world.clock.advance(timedelta(days=4).total_seconds())  # a Saturday: a blocked window
        drills = Drills(
            fleet, world.sessions, world.lb, UsersView(world.lb, fleet), world.clock,
            lambda: world.watch.monitor.state, "C0OPS",
        )  # fmt: skip
        await drills.drive(world.channel)
        await asyncio.gather(*drills.tasks.values())
        assert (await operation(world.sessions, op_id)).state == "blocked"
    world.lb.set_health("eu-west", False)  # then eu-west fails for real
    await world.read()
    assert await world.traffic(op_id) == []
    assert "FailoverTriggered eu-west" in await world.incident_timeline()


async def test_a_real_failover_while_a_drain_cannot_be_applied_is_an_incident(
    world: World,
) -> None:
    proposed = await world.ops.propose(Proposal("drain", "eu-west"), "planned", "U0OPERATOR")
    assert proposed.operation is not None
    await world.ops.confirm(proposed.operation.id, "U0OPERATOR")
    world.lb.fail_next("set_pool_enabled", times=10)
    await world.drive()
    assert (await operation(world.sessions, proposed.operation.id)).state == "applying"
    assert world.lb.enabled("eu-west")
    world.lb.set_health("eu-west", False)  # eu-west fails for real; the drain never landed
    await world.read()
    assert "FailoverTriggered eu-west" in await world.incident_timeline()


async def test_a_drills_moves_go_to_its_thread_and_open_no_incident(
    world: World, fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run, "SAFEGUARD_EVERY", 0.005)
    operations = fleet.operations.model_copy(update={"drill_hold": 0.02, "drill_sample": 0.005})
    quick = fleet.model_copy(
        update={"operations": operations, "targets": Targets(rto=0.5, rejoin=0.5)}
    )
    world.lb.enabled_health = True  # Cloudflare checks the re-enabled pool at once

    async def read() -> None:  # the watch reads Cloudflare while the drill measures
        await world.read(after=0.5)

    drills = Drills(
        quick, world.sessions, world.lb, UsersView(world.lb, quick, before_each=read),
        world.clock, lambda: world.watch.monitor.state, "C0OPS",
    )  # fmt: skip
    proposed = await world.ops.propose(Proposal("drill", "eu-west"), "game day", "U0OPERATOR")
    assert proposed.operation is not None
    op_id = proposed.operation.id
    await world.ops.confirm(op_id, "U0OPERATOR")
    await drills.drive(world.channel)
    await asyncio.wait_for(asyncio.gather(*drills.tasks.values()), timeout=10)
    assert (await operation(world.sessions, op_id)).state == "succeeded"
    assert await world.traffic(op_id) == [TO_US, BACK_HOME]
    assert await incidents(world.sessions) == []


# ---------------------------------------------------------------------- _caused on its own


def drain_of_eu_west(fleet: Fleet, state: OpState, applied: bool) -> Operation:
    view = planned_view(fleet)
    pool = view.pool_by_name(fleet.regions["eu-west"].pool)
    assert pool is not None
    blast = blast_radius(fleet, view, after_change(view, pool, None))
    detail = OperationDetail(blast=[r.stored() for r in blast])
    return Operation(
        kind="drain", region="eu-west", state=state, applied_at=T0 if applied else None,
        detail=detail.model_dump(mode="json"),
    )  # fmt: skip


def move(
    kind: EventKind, region: str = "eu-west", to: str = "us-east", geos: str = EU_GEOS
) -> Event:
    return Event(kind, T0, region, "moved", geos=tuple(geos.split()), to_region=to)


@pytest.mark.parametrize(
    ("state", "applied", "caused"),
    [
        (OpState.AWAITING_CONFIRMATION, False, False),
        (OpState.APPLYING, False, True),  # the call may be landing: the phase comes first
        (OpState.ACTIVE, True, True),
        (OpState.RESTORING, True, True),
        (OpState.REJOINING, True, True),
        (OpState.RESTORED, True, True),
        (OpState.CANCELLED, False, False),
    ],
)
def test_caused_by_state(fleet: Fleet, state: OpState, applied: bool, caused: bool) -> None:
    op = drain_of_eu_west(fleet, state, applied)
    assert _caused(op, move(EventKind.FAILOVER_TRIGGERED)) is caused
    assert _caused(op, move(EventKind.TRAFFIC_RESTORED, to="eu-west")) is caused


@pytest.mark.parametrize(
    ("event", "caused"),
    [
        (move(EventKind.FAILOVER_TRIGGERED), True),
        (move(EventKind.FAILOVER_TRIGGERED, geos="WEU ME"), True),  # some of them
        (move(EventKind.FAILOVER_TRIGGERED, to="apac-sg"), False),
        (move(EventKind.NO_HEALTHY_POOL), False),
        (move(EventKind.FAILOVER_TRIGGERED, geos="WEU OC"), False),  # OC stays on apac-sg
        (move(EventKind.FAILOVER_TRIGGERED, geos=""), False),
        (move(EventKind.FAILOVER_TRIGGERED, region="apac-sg", geos="OC"), False),
        (move(EventKind.TRAFFIC_RESTORED, to="eu-west"), True),
        (move(EventKind.TRAFFIC_RESTORED, region="us-east", to="us-east", geos="WNAM"), False),
    ],
)
def test_caused_by_what_moved(fleet: Fleet, event: Event, caused: bool) -> None:
    assert _caused(drain_of_eu_west(fleet, OpState.ACTIVE, True), event) is caused
