"""A drill's run on fakes: every phase in order, every way it stops and its restore, preflight,
recovery of a drill left without its task, and the outcome against the targets.

The fleet's hold, sampling and targets are cut to fractions of a second: the run measures with
the real monotonic clock (users' view is sampled in real time), the journal with the list clock.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import create_async_engine

from bot.db.engine import async_url, create_engine, sessionmaker
from bot.db.models import Operation
from bot.errors import ProviderError
from bot.fleet import Fleet, Relay, Targets
from bot.incidents import Incidents
from bot.monitor import Event, EventKind, MonitorState, PoolState, PoolTrack
from bot.operations import run
from bot.operations.run import Drills
from bot.operations.state import Cancelled
from bot.reads import PublicCheck
from bot.vantages import Vantages

from ..fakes import ScriptedVantages, UsersView
from ..reading import audited_changes, incidents, journal, operation
from .conftest import Rig

EU = "foundation-eu-west"
EU_GEOS = "WEU EEU ME NAF SAF"
RUN_STEPS = [
    "saving", "disabling", "measuring_rto", "holding", "restoring", "measuring_rejoin",
]  # fmt: skip


def quick(fleet: Fleet, hold: float = 0.05, rto: float = 0.5, rejoin: float = 0.5) -> Fleet:
    operations = fleet.operations.model_copy(update={"drill_hold": hold, "drill_sample": 0.005})
    targets = Targets(rto=rto, rejoin=rejoin)
    return fleet.model_copy(update={"operations": operations, "targets": targets})


@pytest.fixture
def fleet(fleet: Fleet) -> Fleet:
    return quick(fleet)


@pytest.fixture(autouse=True)
def quick_safeguards(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run, "SAFEGUARD_EVERY", 0.005)


@pytest.fixture
def monitor(fleet: Fleet) -> MonitorState:
    """The bot's own probes: every pool healthy unless a test says otherwise."""
    return MonitorState(pools={r: PoolTrack(state=PoolState.HEALTHY) for r in fleet.regions})


@pytest.fixture
def states() -> Iterator[list[str]]:
    """Every state a drill is moved to, in order (confirm's compare-and-set aside)."""
    seen: list[str] = []

    def on_set(target: Operation, value: str, old: object, initiator: object) -> None:
        seen.append(str(value))

    event.listen(Operation.state, "set", on_set)
    yield seen
    event.remove(Operation.state, "set", on_set)


class Looks:
    """The drill's looks at the bot's probes (in preflight, then at every safeguard check of
    the hold); what is in ``then`` runs at the next look."""

    def __init__(self, state: MonitorState) -> None:
        self.state = state
        self.then: list[Callable[[], None]] = []

    def __call__(self) -> MonitorState:
        actions, self.then = self.then, []
        for action in actions:
            action()
        return self.state


def drills(
    rig: Rig,
    monitor: MonitorState | Looks,
    vantages: Vantages | None = None,
    fleet: Fleet | None = None,
) -> Drills:
    """A driver, as the lease holder has it; a new one stands for a new leader."""
    fleet = fleet or rig.fleet
    looks = monitor if isinstance(monitor, Looks) else Looks(monitor)
    return Drills(
        fleet, rig.sessions, rig.lb, vantages or UsersView(rig.lb, fleet), rig.clock, looks,
        "C0OPS",
    )  # fmt: skip


async def run_drill(rig: Rig, driver: Drills) -> None:
    """One pass of the driver, and the drill task it starts, to its end."""
    await driver.drive(rig.channel)
    await asyncio.wait_for(asyncio.gather(*driver.tasks.values()), timeout=10)


async def reaches(rig: Rig, op_id: int, state: str) -> None:
    for _ in range(500):
        if (await operation(rig.sessions, op_id)).state == state:
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"drill {op_id} never reached {state}")


def figures(text: str) -> str:
    """A journal line with its measured seconds (real time, so they vary) as N."""
    return re.sub(r"(bot|EEU) \d+\.\d s", r"\1 N s", text)


def last_line(notes: list[str]) -> str:
    return figures(notes[-1])


async def test_a_drill_goes_through_every_phase_and_succeeds(
    rig: Rig, monitor: MonitorState, states: list[str]
) -> None:
    rig.lb.enabled_health = True  # Cloudflare's monitor checks the re-enabled pool at once
    op_id = await rig.confirmed("drill", "eu-west", reason="game day")
    assert (await operation(rig.sessions, op_id)).state == "starting"
    states.clear()

    await run_drill(rig, drills(rig, monitor))
    op = await operation(rig.sessions, op_id)
    assert op.state == "succeeded"
    assert states == [*RUN_STEPS, "succeeded"]
    assert rig.lb.changes == [("set_pool_enabled", EU, "False"), ("set_pool_enabled", EU, "True")]
    assert rig.lb.enabled("eu-west")
    assert [text for text, _ in await audited_changes(rig.sessions)] == [
        f"drill #{op_id}: disabled {EU}",
        f"drill #{op_id}: restored {EU}",
    ]
    assert [figures(n) for n in rig.channel.notes()] == [
        f"saved the configuration; eu-west serves {EU_GEOS}; no relay in its geo regions: "
        "measured from the bot's location only",
        f"disabling pool {EU}",
        "disabled; measuring the RTO as users see it",
        "RTO bot N s (target < 0.5 s)",
        "restored the saved configuration",
        f"re-enabled; measuring the rejoin of {EU_GEOS}",
        "SUCCEEDED: RTO bot N s; rejoin bot N s",
    ]
    assert rig.channel.texts("post_operation") == [f"drill #{op_id} of eu-west: succeeded"]
    assert op.detail["rto"]["bot"] < 0.5 and op.detail["rejoin"]["bot"] < 0.5
    assert await incidents(rig.sessions) == []


async def test_relays_in_the_drilled_regions_measure_it(rig: Rig, monitor: MonitorState) -> None:
    fleet = rig.fleet.model_copy(update={"relays": [Relay(geo="EEU", url="http://relay.test")]})
    rig.lb.enabled_health = True
    op_id = await rig.confirmed("drill", "eu-west")
    await run_drill(rig, drills(rig, monitor, fleet=fleet))
    assert (await operation(rig.sessions, op_id)).state == "succeeded"
    notes = rig.channel.notes()
    assert notes[0].endswith("measured through the relays in EEU")
    assert last_line(notes) == "SUCCEEDED: RTO EEU N s; rejoin EEU N s"


async def test_a_cancel_aborts_it_and_restores_the_pool(
    rig: Rig, monitor: MonitorState, states: list[str]
) -> None:
    rig.lb.enabled_health = True
    op_id = await rig.confirmed("drill", "eu-west")
    answers: list[Cancelled] = []

    async def cancel() -> None:
        answers.append((await rig.ops.cancel(op_id, "U0OPERATOR")).outcome)

    rig.lb.during_next("set_pool_enabled", cancel)
    states.clear()
    await run_drill(rig, drills(rig, monitor))
    assert answers == [Cancelled.STOPPING]
    assert (await operation(rig.sessions, op_id)).state == "aborted"
    # Stopped at the first look after the disable: restored without measuring or holding.
    assert states == [*RUN_STEPS[:3], "restoring", "measuring_rejoin", "aborted"]
    assert rig.lb.changes == [("set_pool_enabled", EU, "False"), ("set_pool_enabled", EU, "True")]
    assert rig.lb.enabled("eu-west")
    notes = rig.channel.notes()
    assert "cancel asked by U0OPERATOR" in notes
    assert "stopping: cancelled by U0OPERATOR" in notes
    assert last_line(notes).startswith("ABORTED: cancelled by U0OPERATOR; RTO")


async def test_a_drill_stopped_before_its_rto_says_the_rto_was_not_measured(
    rig: Rig, monitor: MonitorState
) -> None:
    rig.lb.enabled_health = True
    op_id = await rig.confirmed("drill", "eu-west")

    async def cancel() -> None:
        await rig.ops.cancel(op_id, "U0OPERATOR")

    rig.lb.during_next("set_pool_enabled", cancel)
    await run_drill(rig, drills(rig, monitor))
    assert "RTO ;" not in rig.channel.notes()[-1]


@pytest.mark.parametrize("receiving", [PoolState.DOWN, PoolState.DEGRADED])
async def test_a_receiving_pool_failing_during_the_hold_aborts_it(
    rig: Rig, monitor: MonitorState, states: list[str], receiving: PoolState
) -> None:
    rig.lb.enabled_health = True
    op_id = await rig.confirmed("drill", "eu-west")

    async def us_east_fails() -> None:  # while the disable is in flight: preflight has passed
        monitor.pools["us-east"].state = receiving

    rig.lb.during_next("set_pool_enabled", us_east_fails)
    states.clear()
    await run_drill(rig, drills(rig, monitor))
    assert (await operation(rig.sessions, op_id)).state == "aborted"
    assert states == [*RUN_STEPS, "aborted"]
    assert rig.lb.enabled("eu-west")
    why = f"safeguard: the receiving pool us-east is {receiving}"
    notes = rig.channel.notes()
    assert f"stopping: {why}" in notes
    assert last_line(notes) == f"ABORTED: {why}; RTO bot N s; rejoin bot N s"


async def test_a_real_incident_interrupts_it(rig: Rig, monitor: MonitorState) -> None:
    rig.lb.enabled_health = True
    op_id = await rig.confirmed("drill", "eu-west")

    async def apac_goes_down() -> None:
        now = rig.clock()
        async with rig.sessions.begin() as session:
            down = Event(EventKind.POOL_DOWN, now, "apac-sg", "gateway-apac-sg: refused", now)
            await Incidents(rig.fleet, "C0ALERTS").apply(session, [down], now)

    rig.lb.during_next("set_pool_enabled", apac_goes_down)
    await run_drill(rig, drills(rig, monitor))
    assert (await operation(rig.sessions, op_id)).state == "interrupted"
    assert rig.lb.enabled("eu-west")
    assert last_line(rig.channel.notes()).startswith("INTERRUPTED: a real incident began (#1)")


async def test_an_error_while_disabling_aborts_it_and_the_pool_is_enabled_again(
    rig: Rig, monitor: MonitorState, states: list[str]
) -> None:
    rig.lb.enabled_health = True
    rig.lb.fail_next("set_pool_enabled")
    op_id = await rig.confirmed("drill", "eu-west")
    states.clear()
    await run_drill(rig, drills(rig, monitor))
    assert (await operation(rig.sessions, op_id)).state == "aborted"
    assert states == ["saving", "disabling", "restoring", "measuring_rejoin", "aborted"]
    assert rig.lb.changes == [("set_pool_enabled", EU, "False"), ("set_pool_enabled", EU, "True")]
    assert rig.lb.enabled("eu-west")
    error = "error: Cloudflare failed (HTTP 500); try again shortly"
    assert f"stopping: {error}" in rig.channel.notes()
    assert last_line(rig.channel.notes()).startswith(f"ABORTED: {error}; RTO")


@pytest.mark.parametrize(
    ("condition", "reason"),
    [
        ("incident", "incident #1 is open"),
        ("saturday", "a blocked window: no game days before or during the weekend"),
        ("night", "a blocked window: outside working hours"),
        ("target unhealthy", "the target pool of eu-west is not healthy"),
        ("receiving down", "the bot's probes say the receiving pool us-east is down"),
        ("cloudflare down", None),
    ],
)
async def test_preflight_blocks_it_and_nothing_changes(
    rig: Rig, monitor: MonitorState, condition: str, reason: str | None
) -> None:
    op_id = await rig.confirmed("drill", "eu-west")
    match condition:
        case "incident":
            now = rig.clock()
            down = Event(EventKind.POOL_DOWN, now, "apac-sg", "refused", now)
            async with rig.sessions.begin() as session:
                await Incidents(rig.fleet, "C0ALERTS").apply(session, [down], now)
        case "saturday":
            rig.clock.advance(timedelta(days=4).total_seconds())
        case "night":
            rig.clock.advance(timedelta(hours=9).total_seconds())  # 23:00 UTC
        case "target unhealthy":
            rig.lb.set_health("eu-west", False)
        case "receiving down":
            monitor.pools["us-east"].state = PoolState.DOWN
        case "cloudflare down":
            rig.lb.fail_next("live_view")
    await run_drill(rig, drills(rig, monitor))
    op = await operation(rig.sessions, op_id)
    assert op.state == "blocked" and op.applied_at is None
    assert rig.lb.changes == []
    said = rig.channel.notes()
    if reason is None:
        assert said == [
            "BLOCKED: preflight could not run: Cloudflare failed (HTTP 500); try again shortly"
        ]
    else:
        assert said == [f"BLOCKED: preflight refused: {reason}"]


async def test_a_missed_rto_fails_it(rig: Rig, monitor: MonitorState) -> None:
    errors = ScriptedVantages(rig.fleet, [[PublicCheck("the bot's location", None, status=522)]])
    op_id = await rig.confirmed("drill", "eu-west")
    await run_drill(rig, drills(rig, monitor, errors, quick(rig.fleet, rto=0.1, rejoin=0.1)))
    assert (await operation(rig.sessions, op_id)).state == "failed"
    assert rig.lb.enabled("eu-west")
    notes = rig.channel.notes()
    assert "RTO bot — (target < 0.1 s)" in notes
    assert notes[-1] == "FAILED: the RTO target was missed; RTO bot —; rejoin bot —"


async def test_a_missed_rejoin_fails_it(rig: Rig, monitor: MonitorState) -> None:
    # Cloudflare never reports the re-enabled pool healthy: its regions stay on us-east.
    op_id = await rig.confirmed("drill", "eu-west")
    await run_drill(rig, drills(rig, monitor, fleet=quick(rig.fleet, rejoin=0.1)))
    op = await operation(rig.sessions, op_id)
    assert op.state == "failed" and op.detail["rejoin"] == {"bot": None}
    assert last_line(rig.channel.notes()) == (
        "FAILED: the rejoin target was missed; RTO bot N s; rejoin bot —"
    )


# ---------------------------------------------------------------------- after a restart


def stop(driver: Drills) -> None:
    """Ask the driver's drills to stop, as ``Drills.stop`` does when the lease is lost or the bot
    shuts down; called from inside the drill (a look, a sample, a database read): each stops at
    its next look, restores its pool and records why."""
    driver.stopping = True


def kill(driver: Drills) -> None:
    """The bot dies under its drills: their tasks end where they are (at the next await, here
    not a database call), nothing more is recorded; the next leader recovers them."""
    for task in driver.tasks.values():
        task.cancel()


async def finished(driver: Drills) -> None:
    """Wait for the driver's drill tasks to end by themselves (whatever they raised)."""
    await asyncio.wait(list(driver.tasks.values()), timeout=10)
    assert all(task.done() for task in driver.tasks.values())
    await driver.stop()  # collects them


async def test_a_drill_left_holding_is_restored_by_the_next_leader(
    rig: Rig, monitor: MonitorState
) -> None:
    # The lease is lost during the hold, and the restore in the drill's finally fails: the
    # drill is left restoring (its cause recorded) with its pool disabled.
    looks = Looks(monitor)
    first = drills(rig, looks, fleet=quick(rig.fleet, hold=30))
    op_id = await rig.confirmed("drill", "eu-west")
    await first.drive(rig.channel)
    await reaches(rig, op_id, "holding")
    rig.lb.fail_next("set_pool_enabled")
    looks.then.append(lambda: stop(first))
    await finished(first)
    assert (await operation(rig.sessions, op_id)).state == "restoring"
    assert not rig.lb.enabled("eu-west")

    await drills(rig, Looks(monitor)).drive(rig.channel)  # the next leader's first pass
    op = await operation(rig.sessions, op_id)
    assert op.state == "interrupted" and op.restored_at is not None
    assert rig.lb.enabled("eu-west")
    assert rig.lb.changes[-1] == ("set_pool_enabled", EU, "True")
    lines = await journal(rig.sessions, op_id)
    stopped = "the bot stopped (a shutdown, or it lost its lease)"
    assert lines[-4:] == [
        f"stopping: {stopped}",
        "the drill lost its driver (a restart): restoring the saved configuration",
        "restored the saved configuration",
        f"INTERRUPTED: {stopped}; the pool is enabled again",
    ]
    await drills(rig, Looks(monitor)).drive(rig.channel)
    assert lines == await journal(rig.sessions, op_id)  # said once


async def test_a_recovery_keeps_the_cause_the_drill_had_recorded(
    rig: Rig, monitor: MonitorState
) -> None:
    # Cancelled during the hold, restored, then the bot dies while the rejoin is measured
    # (Cloudflare never reports the pool healthy again: it would be measured for 10 s).
    held = quick(rig.fleet, hold=30, rejoin=5)

    async def stop_once_restored() -> None:
        if rig.lb.enabled("eu-west"):
            kill(first)

    first = drills(
        rig, Looks(monitor), UsersView(rig.lb, held, before_each=stop_once_restored), held
    )
    op_id = await rig.confirmed("drill", "eu-west")
    await first.drive(rig.channel)
    await reaches(rig, op_id, "holding")
    await rig.ops.cancel(op_id, "U0OPERATOR")
    await finished(first)
    assert (await operation(rig.sessions, op_id)).state == "measuring_rejoin"
    assert rig.lb.enabled("eu-west")

    await drills(rig, Looks(monitor)).drive(rig.channel)
    op = await operation(rig.sessions, op_id)
    assert op.state == "aborted"
    lines = await journal(rig.sessions, op_id)
    assert lines[-1] == "ABORTED: cancelled by U0OPERATOR; the pool is enabled again"
    assert "the drill lost its driver (a restart): restoring the saved configuration" in lines


async def test_a_drill_stopped_during_a_database_read_leaves_the_database_writable(
    rig: Rig, monitor: MonitorState, migrated_url: str, request: pytest.FixtureRequest
) -> None:
    sqlite = migrated_url.startswith("sqlite")
    # A short busy timeout on SQLite: a locked database says so in 0.05 s, not 5 s.
    engine = (
        create_async_engine(async_url(migrated_url), connect_args={"timeout": 0.05})
        if sqlite
        else create_engine(migrated_url)
    )
    sessions = sessionmaker(engine)
    held = quick(rig.fleet, hold=30)

    def leader() -> Drills:
        users = UsersView(rig.lb, held)
        return Drills(held, sessions, rig.lb, users, rig.clock, Looks(monitor), "C0OPS")

    first = leader()

    armed = [True]

    def stop_in_the_read(conn: object, cursor: object, statement: str, *_: object) -> None:
        # The hold's _check_cancel opens a session and loads the drill: stop it right there.
        if armed and "FROM operations" in statement:
            armed.clear()
            stop(first)

    try:
        op_id = await rig.confirmed("drill", "eu-west")
        await first.drive(rig.channel)
        await reaches(rig, op_id, "holding")
        event.listen(engine.sync_engine, "before_cursor_execute", stop_in_the_read)
        await finished(first)
        event.remove(engine.sync_engine, "before_cursor_execute", stop_in_the_read)
        assert rig.lb.enabled("eu-west")  # the restore call comes first: the pool is back
        second = leader()
        for _ in range(2):  # the scheduler's passes
            await second.drive(rig.channel)
        assert (await operation(rig.sessions, op_id)).state == "interrupted"
    finally:
        await first.stop()
        await engine.dispose()


async def test_a_failed_restore_after_a_cancel_keeps_the_cancel_as_the_cause(
    rig: Rig, monitor: MonitorState
) -> None:
    held = quick(rig.fleet, hold=30)
    driver = drills(rig, monitor, fleet=held)
    op_id = await rig.confirmed("drill", "eu-west")
    await driver.drive(rig.channel)
    await reaches(rig, op_id, "holding")
    rig.lb.fail_next("set_pool_enabled")  # Cloudflare fails the restore once
    await rig.ops.cancel(op_id, "U0OPERATOR")
    task = driver.tasks[op_id]
    await asyncio.wait([task], timeout=5)
    assert isinstance(task.exception(), ProviderError)  # the restore failed: the task ended
    await driver.drive(rig.channel)  # the next pass: the restore is retried
    assert rig.lb.enabled("eu-west")
    op = await operation(rig.sessions, op_id)
    lines = await journal(rig.sessions, op_id)
    assert (op.state, lines[-1]) == (
        "aborted",
        "ABORTED: cancelled by U0OPERATOR; the pool is enabled again",
    )
