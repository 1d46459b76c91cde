"""The sender (Alerts.flush) as the channel sees it, on the recording notifier and the list clock:
one message per incident and its thread replies in order, updates coalesced, Pool Down
inhibiting Pool Degraded, silences, the flap window, a crash between a post and its mark, and a
flapping gateway driven through the watch in simulated time."""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import alerts, silences
from bot.alerts import Alerts
from bot.db.engine import create_engine, sessionmaker
from bot.fleet import Fleet
from bot.incidents import Incidents
from bot.monitor import Event, EventKind, MonitorState, PoolState, PoolTrack
from bot.observations import Outcome, ProbeResult
from bot.watch import Watch

from .fakes import T0, Crash, FakeLoadBalancer, ListClock, RecordingNotifier
from .reading import incidents, timeline

CHANNEL = "C0ALERTS"


@dataclass
class Sender:
    fleet: Fleet
    sessions: async_sessionmaker[AsyncSession]
    clock: ListClock
    channel: RecordingNotifier
    state: MonitorState
    incidents: Incidents

    def alerts(self) -> Alerts:
        """The sender, as the lease holder has it; a new one stands for a new leader."""
        return Alerts(self.sessions, self.channel, self.fleet, lambda: self.state, self.clock)

    async def happen(self, *events: tuple[EventKind, str]) -> None:
        """Events confirmed now, as the watch hands them to the incidents."""
        now = self.clock()
        confirmed = [Event(kind, now, region, f"{kind} evidence") for kind, region in events]
        async with self.sessions.begin() as session:
            await self.incidents.apply(session, confirmed, now)

    async def flush(self, after: float = 0) -> int:
        self.clock.advance(after)
        return await self.alerts().flush()

    def seen(self) -> list[str]:
        """What the channel got: messages, replies ("  ↳ ..."), updates ("(update)")."""
        out = []
        for p in self.channel.posts:
            if p.method == "post_thread":
                out.append(f"  ↳ {p.text}")
            elif p.method == "update_incident":
                out.append("(update)")
            else:
                out.append(p.text)
        return out


@pytest.fixture
async def sender(
    fleet: Fleet, migrated_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Sender]:
    monkeypatch.setattr(alerts, "POST_SPACING", 0.0)
    engine = create_engine(migrated_url)
    clock = ListClock()
    state = MonitorState(pools={r: PoolTrack(state=PoolState.HEALTHY) for r in fleet.regions})
    yield Sender(
        fleet,
        sessionmaker(engine),
        clock,
        RecordingNotifier(clock),
        state,
        Incidents(fleet, CHANNEL),
    )
    await engine.dispose()


K = EventKind


async def test_one_message_then_its_replies_in_order(sender: Sender) -> None:
    await sender.happen(
        (K.POOL_DOWN, "us-east"), (K.FAILOVER_TRIGGERED, "us-east"), (K.POOL_DEGRADED, "apac-sg")
    )
    assert await sender.flush() == 4
    assert sender.seen() == [
        "#1 us-east down",
        "  ↳ PoolDown us-east + FailoverTriggered us-east",
        "  ↳ PoolDegraded apac-sg",
        "(update)",
    ]
    await sender.happen((K.RECOVERED, "apac-sg"), (K.TRAFFIC_RESTORED, "us-east"))
    await sender.flush(after=61)
    assert sender.seen()[4:] == [
        "  ↳ Recovered apac-sg",
        "  ↳ TrafficRestored us-east",
        "(update)",
    ]
    [message] = sender.channel.of("post_incident")
    replies = sender.channel.of("post_thread")
    assert all(r.thread_ts == message.ts for r in replies)
    assert [r.ts for r in replies] == sorted(r.ts for r in replies) and all(
        r.ts > message.ts for r in replies
    )
    assert {u.ts for u in sender.channel.of("update_incident")} == {message.ts}
    assert await sender.flush() == 0  # nothing is owed twice


async def test_updates_are_coalesced_into_one_call_showing_the_latest(sender: Sender) -> None:
    await sender.happen((K.POOL_DOWN, "us-east"))
    await sender.flush()
    for second, (kind, region) in enumerate(
        [(K.FAILOVER_TRIGGERED, "us-east"), (K.POOL_DOWN, "eu-west"), (K.GRAY_FAILURE, "apac-sg")]
    ):
        sender.clock.advance(second + 1)
        await sender.happen((kind, region))
    await sender.flush(after=1)
    updates = sender.channel.of("update_incident")
    assert len(updates) == 2  # one for the first flush, one for the three events since
    latest = updates[-1].incident
    assert latest is not None
    kinds = [e.kind for e in latest.entries]
    assert kinds[-3:] == ["FailoverTriggered", "PoolDown", "GrayFailure"]
    assert sender.seen()[-1] == "(update)"  # after the replies it brings up to date


async def test_pool_down_inhibits_pool_degraded_of_the_same_pool_only(sender: Sender) -> None:
    sender.state.pools["eu-west"].state = PoolState.DOWN
    await sender.happen(
        (K.POOL_DEGRADED, "eu-west"), (K.POOL_DOWN, "eu-west"), (K.POOL_DEGRADED, "apac-sg")
    )
    await sender.flush()
    assert sender.seen() == [
        "#1 eu-west down",
        "  ↳ PoolDown eu-west",
        "  ↳ PoolDegraded apac-sg",
        "(update)",
    ]
    sender.state.pools["eu-west"].state = PoolState.DEGRADED
    assert await sender.flush(after=120) == 0  # what was inhibited stays unsaid


async def test_silences_mute_replies_but_not_recoveries(sender: Sender) -> None:
    await sender.happen((K.POOL_DOWN, "us-east"))
    await sender.flush()
    async with sender.sessions.begin() as session:
        await silences.silence(
            session, "eu-west", timedelta(hours=1), "noisy", "U0OPERATOR", sender.clock()
        )
    sender.clock.advance(5)
    await sender.happen((K.POOL_DOWN, "eu-west"), (K.FAILOVER_TRIGGERED, "eu-west"))
    await sender.flush()
    sender.clock.advance(60)
    await sender.happen((K.RECOVERED, "eu-west"), (K.TRAFFIC_RESTORED, "eu-west"))
    await sender.flush()
    assert sender.seen() == [
        "#1 us-east down",
        "  ↳ PoolDown us-east",
        "(update)",
        "(update)",  # the message is kept current: it shows the silence
        "  ↳ Recovered eu-west + TrafficRestored eu-west",
        "(update)",
    ]
    update = sender.channel.of("update_incident")[1].incident
    assert update is not None and update.silenced == ["eu-west"]


async def test_a_new_incidents_message_goes_before_what_older_ones_owe(sender: Sender) -> None:
    await sender.happen((K.POOL_DOWN, "eu-west"))
    await sender.flush()
    sender.clock.advance(5)
    await sender.happen((K.FAILOVER_TRIGGERED, "eu-west"))  # waits for eu-west's window
    healthy = dict.fromkeys(sender.fleet.regions, sender.clock() - timedelta(hours=1))
    async with sender.sessions.begin() as session:
        await sender.incidents.settle(session, healthy, sender.clock())
    # Incident #1 owes its failover, its close and an update when #2 opens: #2 goes first.
    await sender.happen((K.POOL_DOWN, "apac-sg"))
    await sender.flush()
    after_first = sender.seen()[sender.seen().index("(update)") + 1 :]
    assert after_first[0] == "#2 apac-sg down"


async def test_the_sender_posts_as_soon_as_it_is_woken(
    sender: Sender, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(alerts, "SWEEP", 3600.0)  # no sweep: only a wake can send it
    running = sender.alerts()
    task = asyncio.create_task(running.run())
    try:
        await asyncio.sleep(0.05)  # its first (empty) flush
        await sender.happen((K.POOL_DOWN, "us-east"))
        started = time.monotonic()
        running.wake()
        while not sender.channel.of("post_incident"):
            assert time.monotonic() - started < 1.0, "not posted within a second of the wake"
            await asyncio.sleep(0.005)
    finally:
        running.stop()
        await asyncio.wait_for(task, timeout=5)


async def test_critical_replies_and_recoveries_are_not_held_by_the_window(
    sender: Sender,
) -> None:
    await sender.happen((K.POOL_DEGRADED, "eu-west"))
    await sender.flush()
    sender.clock.advance(5)
    await sender.happen((K.POOL_DOWN, "eu-west"), (K.FAILOVER_TRIGGERED, "eu-west"))
    await sender.flush()  # 5 s after the last reply: Pool Down goes, the failover waits
    assert [t for t in sender.seen() if t.startswith("  ↳")] == [
        "  ↳ PoolDegraded eu-west",
        "  ↳ PoolDown eu-west",
    ]
    await sender.flush(after=5)
    assert sender.seen()[-1] != "  ↳ FailoverTriggered eu-west"  # still within the window
    sender.clock.advance(5)
    await sender.happen((K.RECOVERED, "eu-west"))
    await sender.flush()  # a recovery goes at once, and takes what waited before it
    assert sender.seen()[-2] == "  ↳ FailoverTriggered eu-west + Recovered eu-west"
    await sender.flush(after=60)
    assert sender.seen().count("  ↳ FailoverTriggered eu-west + Recovered eu-west") == 1


async def test_a_thread_reads_in_the_order_things_happened(sender: Sender) -> None:
    """What waited for the window never arrives after a later urgent reply of its pool: at
    3 a.m. a Failover Triggered read under Traffic Restored says the opposite of the truth."""
    await sender.happen((K.POOL_DOWN, "eu-west"))
    await sender.flush()
    sender.clock.advance(3)
    await sender.happen((K.FAILOVER_TRIGGERED, "eu-west"))
    await sender.flush()
    sender.clock.advance(5)
    await sender.happen((K.RECOVERED, "eu-west"), (K.POOL_DEGRADED, "apac-sg"))
    await sender.flush()
    sender.clock.advance(3)
    await sender.happen((K.TRAFFIC_RESTORED, "eu-west"))
    await sender.flush()
    assert [t for t in sender.seen() if t.startswith("  ↳")] == [
        "  ↳ PoolDown eu-west",
        "  ↳ FailoverTriggered eu-west + Recovered eu-west",
        "  ↳ PoolDegraded apac-sg",
        "  ↳ TrafficRestored eu-west",
    ]


async def test_a_pool_that_fails_again_after_recovering_waits_for_the_window(
    sender: Sender, fleet: Fleet
) -> None:
    window = fleet.watch.flap_window
    await sender.happen((K.POOL_DOWN, "eu-west"))
    await sender.flush()
    sender.clock.advance(10)
    await sender.happen((K.RECOVERED, "eu-west"))
    await sender.flush()
    sender.clock.advance(10)
    await sender.happen((K.POOL_DOWN, "eu-west"), (K.POOL_DEGRADED, "apac-sg"))
    await sender.flush()  # flapping: even Pool Down waits now
    assert [t for t in sender.seen() if t.startswith("  ↳")] == [
        "  ↳ PoolDown eu-west",
        "  ↳ Recovered eu-west",
        "  ↳ PoolDegraded apac-sg",  # another pool: its own window
    ]
    await sender.flush(after=window - 11)
    assert sender.seen()[-1] != "  ↳ PoolDown eu-west"  # 59 s after its last reply: not yet
    await sender.flush(after=1)
    assert sender.seen()[-1] == "  ↳ PoolDown eu-west"
    times = [p.at for p in sender.channel.of("post_thread") if p.regions == {"eu-west"}]
    assert [(b - a).total_seconds() for a, b in itertools.pairwise(times)] == [10, window]


async def test_the_close_is_not_held_back_by_the_window(sender: Sender) -> None:
    await sender.happen((K.POOL_DOWN, "eu-west"))
    await sender.flush()
    sender.clock.advance(5)
    await sender.happen((K.FAILOVER_TRIGGERED, "eu-west"))
    await sender.flush()
    assert sender.seen()[-1] == "(update)"  # the failover waits for the window
    sender.clock.advance(5)
    healthy = dict.fromkeys(sender.fleet.regions, sender.clock() - timedelta(hours=1))
    async with sender.sessions.begin() as session:
        assert await sender.incidents.settle(session, healthy, sender.clock()) is not None
    await sender.flush()  # 10 s after the last reply of eu-west: the close takes it all
    assert sender.seen()[-3:] == ["  ↳ FailoverTriggered eu-west", "  ↳ Closed None", "(update)"]
    [message] = sender.channel.of("post_incident")
    assert all(p.thread_ts == message.ts for p in sender.channel.of("post_thread"))


@pytest.mark.parametrize("crash_at", ["post_incident", "post_thread", "update_incident"])
async def test_a_crash_between_a_post_and_its_mark_repeats_at_most_one_post(
    sender: Sender, crash_at: str
) -> None:
    await sender.happen((K.POOL_DOWN, "us-east"), (K.POOL_DOWN, "eu-west"))
    sender.channel.crash_after_next(crash_at)
    with pytest.raises(Crash):
        await sender.flush()
    before = sender.seen()
    await sender.flush(after=1)  # the next leader sends what is still owed
    everything = sender.seen()
    once = [
        "#1 us-east down",
        "  ↳ PoolDown us-east",
        "  ↳ PoolDown eu-west",
        "(update)",
    ]
    repeated = [t for t in everything if everything.count(t) > 1]
    assert repeated == [before[-1]] * 2  # the post whose mark was lost, and only it
    assert list(dict.fromkeys(everything)) == once
    assert await sender.flush(after=1) == 0


async def test_slack_failing_sends_everything_later_in_the_same_order(sender: Sender) -> None:
    await sender.happen((K.POOL_DOWN, "us-east"), (K.POOL_DOWN, "eu-west"))
    sender.channel.fail_next("post_thread", times=1)
    await sender.flush()
    assert sender.seen() == ["#1 us-east down"]  # the rest of the incident waits
    await sender.flush(after=1)
    assert sender.seen() == [
        "#1 us-east down",
        "  ↳ PoolDown us-east",
        "  ↳ PoolDown eu-west",
        "(update)",
    ]


# ---------------------------------------------------------------------- a flapping gateway
# One incident message and at most one thread reply per pool per flap window, whatever the number
# of flaps. The watch, the monitor, the incidents and the sender run as the lease holder runs them
# (probes every ``probe_interval`` with the confirmations asked for at once, Cloudflare read every
# ``cloudflare_poll``, the tick and the flush every second), driven by the list clock: four flap
# windows of a flip every 2.5 s take about a second (the end-to-end test it replaced slept 30 s).
# The end-to-end tests' fast watch: a 10 s flap window stands for the minute.
FAST = {"probe_interval": 1.0, "cloudflare_poll": 1.0, "settle": 3.0, "rto_alert": 6.0}
WINDOW = 10.0
PERIOD = 2.5  # the gateway flips between healthy and failing this often
WARM = 5.0  # healthy before it starts flapping
FLAPPING = 40.0  # four flap windows


@dataclass
class Gateway:
    """eu-west's gateway: healthy, then flapping from ``start`` until ``stop``."""

    start: float
    stop: float

    def healthy(self, t: float) -> bool:
        if t < self.start or t >= self.stop:
            return True
        return int((t - self.start) // PERIOD) % 2 == 1  # failing first


@dataclass
class CloudflareMonitor:
    """Cloudflare's own monitor of eu-west: a check a second, two in a row to change."""

    lb: FakeLoadBalancer
    healthy: bool = True
    streak: int = 0

    def check(self, ok: bool) -> None:
        if ok == self.healthy:
            self.streak = 0
            return
        self.streak += 1
        if self.streak >= 2:
            self.healthy, self.streak = ok, 0
            self.lb.set_health("eu-west", ok)


@dataclass
class Leader:
    fleet: Fleet
    sessions: async_sessionmaker[AsyncSession]
    clock: ListClock
    lb: FakeLoadBalancer
    watch: Watch
    alerts: Alerts
    channel: RecordingNotifier

    def probe(self, region: str, origin: str, ok: bool) -> ProbeResult:
        if ok:
            return ProbeResult(
                region, origin, "http://gw", Outcome.HEALTHY, "HTTP 200", self.clock()
            )
        return ProbeResult(
            region, origin, "http://gw", Outcome.HTTP_STATUS, "HTTP 503: d1 error", self.clock(),
            status_code=503, failing_checks={"d1": "error"},
        )  # fmt: skip

    async def second(self, gateway: Gateway, cloudflare: CloudflareMonitor) -> None:
        """One second of the lease holder's life."""
        t = self.clock.since()
        for region, origin in self.fleet.origins:
            ok = gateway.healthy(t) if region == "eu-west" else True
            while await self.watch.on_probe(self.probe(region, origin.name, ok)):
                self.clock.advance(0.05)  # confirmed at once
        cloudflare.check(gateway.healthy(t))
        await self.watch.poll_cloudflare()
        await self.watch.tick()
        await self.alerts.flush()

    async def run(self, gateway: Gateway, cloudflare: CloudflareMonitor, until: float) -> None:
        """Second after second of simulated time, up to ``until`` seconds after T0."""
        start = math.ceil(self.clock.since())
        for t in range(start, math.ceil(until)):
            self.clock.set(T0 + timedelta(seconds=t))
            await self.second(gateway, cloudflare)
        self.clock.set(T0 + timedelta(seconds=math.ceil(until)))


@pytest.fixture
async def leader(
    fleet: Fleet, migrated_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Leader]:
    monkeypatch.setattr(alerts, "POST_SPACING", 0.0)
    fleet = fleet.model_copy(
        update={"watch": fleet.watch.model_copy(update=FAST | {"flap_window": WINDOW})}
    )
    engine = create_engine(migrated_url)
    sessions = sessionmaker(engine)
    clock = ListClock()
    lb = FakeLoadBalancer(fleet, clock)
    watch = Watch(fleet, sessions, Incidents(fleet, "C0ALERTS"), lb, clock)
    channel = RecordingNotifier(clock)
    yield Leader(
        fleet, sessions, clock, lb, watch,
        Alerts(sessions, channel, fleet, lambda: watch.monitor.state, clock), channel,
    )  # fmt: skip
    await engine.dispose()


async def test_a_flapping_gateway_stays_within_the_message_bound(leader: Leader) -> None:
    gateway = Gateway(start=WARM, stop=WARM + FLAPPING)
    cloudflare = CloudflareMonitor(leader.lb)
    await leader.run(gateway, cloudflare, until=WARM + FLAPPING)

    [incident] = await incidents(leader.sessions)
    kinds = await timeline(leader.sessions, incident.id)
    flaps = int(FLAPPING / (2 * PERIOD))  # down and up again
    assert kinds.count("PoolDown eu-west") >= flaps - 1
    assert kinds.count("Recovered eu-west") >= flaps - 1
    assert kinds.count("FailoverTriggered eu-west") >= flaps - 1  # Cloudflare flapped along
    assert incident.closed_at is None  # never healthy for the settle time while flapping

    [message] = leader.channel.of("post_incident")
    replies = leader.channel.thread(message.ts)
    assert replies and all(p.method == "post_thread" for p in replies)
    assert {r for p in replies for r in p.regions} == {"eu-west"}
    times = [p.at for p in replies]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    # Its first failure and recovery go at once (Pool Down, Recovered, Traffic Restored); from
    # its second failure on it is flapping: at most one reply per pool per window.
    assert all(g >= WINDOW for g in gaps[2:]), gaps
    assert len(replies) <= FLAPPING / WINDOW + 3

    # It stops flapping: the incident closes, still one message, what was held goes out.
    await leader.run(gateway, cloudflare, until=WARM + FLAPPING + 10)
    [incident] = await incidents(leader.sessions)
    assert incident.closed_at is not None
    assert len(leader.channel.of("post_incident")) == 1
    thread = leader.channel.thread(message.ts)
    assert thread[-1].text.endswith("Closed None")
    final = leader.channel.of("update_incident")[-1].incident
    assert final is not None and final.closed_at is not None
    # Nothing was lost: what waited went out together, each event once (what could not wait
    # went ahead of what waited).
    replied = [f"{e.kind} {e.region}" for p in thread for e in p.entries]
    unsaid = ("Detected", "AlertPosted", "CloudflareHealth")  # the timeline's own entries
    owed = [k for k in await timeline(leader.sessions, incident.id) if k.split()[0] not in unsaid]
    assert sorted(replied) == sorted(owed)
