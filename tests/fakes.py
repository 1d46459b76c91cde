"""In-memory stand-ins for the ports, and a clock the tests move by hand.

- ``FakeLoadBalancer``: the ``LoadBalancer`` port over ``bot.lbmodel`` types, starting from the
  fleet's plan. Pool health follows Cloudflare's rules (bot/sandbox/cloudflare.py ``pool_health``):
  it comes from the enabled origins' health; a disabled pool is not checked (unknown); a pool or
  origin enabled again is unknown until the test says what the monitor found (``set_health``).
  Every call is recorded; the next calls of a method can be made to fail, or to run something
  while they are in flight.
- ``ListClock``: ``datetime.now(UTC)`` that only moves when told.
- ``RecordingNotifier``: the channel (``ChannelNotifier``) as a list of posts in order, each with
  a monotonic ts; a post can be made to fail (Slack down) or to crash the bot right after Slack
  answered.
- ``UsersView`` and ``ScriptedVantages``: what users get from the public hostname, for drills.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from bot.errors import ProviderError, ProviderNotFound
from bot.fleet import Fleet
from bot.lbmodel import (
    HealthEvent,
    LiveView,
    LoadBalancerInfo,
    MonitorInfo,
    OriginChange,
    PoolHealth,
    PoolInfo,
)
from bot.planned import planned_view
from bot.ports import ChannelNotifier, LoadBalancer
from bot.reads import (
    Dashboard,
    EntryView,
    IncidentView,
    OperationView,
    PublicCheck,
    SilenceNotice,
)
from bot.routing import routing_table
from bot.vantages import Vantages
from bot.views.silences import silence_notice_text

# A Tuesday at 14:00 UTC: inside working hours, outside failover.toml's blocked windows.
T0 = datetime(2026, 11, 24, 14, 0, tzinfo=UTC)

Action = Callable[[], Awaitable[object]]


class ListClock:
    """A clock callable like ``datetime.now(UTC)``, that moves only when a test moves it."""

    def __init__(self, start: datetime = T0) -> None:
        if start.tzinfo is None:
            raise ValueError("the bot keeps UTC times only")
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now

    def set(self, at: datetime) -> None:
        self.now = at

    def since(self, start: datetime = T0) -> float:
        """Seconds from ``start`` to now."""
        return (self.now - start).total_seconds()


def _pool_health(pool: PoolInfo, monitored: bool = True) -> bool | None:
    """Cloudflare's pool health from its enabled origins' (sandbox/cloudflare.py's rule)."""
    if not pool.enabled or not monitored:
        return None
    enabled = [o for o in pool.origins if o.enabled]
    up = sum(1 for o in enabled if o.healthy is True)
    unknown = sum(1 for o in enabled if o.healthy is None)
    if up >= pool.minimum_origins:
        return True
    if up + unknown < pool.minimum_origins:
        return False
    return None


class FakeLoadBalancer:
    """The load balancer in memory: ``planned_view(fleet)`` at the start, every pool healthy.

    ``calls`` holds every call in order, as strings: ``("set_pool_enabled", pool_id, "False")``.
    """

    def __init__(self, fleet: Fleet, clock: Callable[[], datetime] | None = None) -> None:
        self.fleet = fleet
        self.clock = clock or (lambda: datetime.now(UTC))
        view = planned_view(fleet)
        self.info: LoadBalancerInfo = view.load_balancer
        self.monitor_info: MonitorInfo | None = view.monitor
        self._pools: dict[str, PoolInfo] = {}
        for pool_id, pool in view.pools.items():
            origins = tuple(replace(o, healthy=True if o.enabled else None) for o in pool.origins)
            self._pools[pool_id] = self._derived(replace(pool, origins=origins))
        self.calls: list[tuple[str, ...]] = []
        self.events: list[HealthEvent] = []
        # What a re-enabled pool's or origin's health becomes: Cloudflare's is unknown until its
        # monitor checks it; a test may say the check is done at once (True).
        self.enabled_health: bool | None = None
        self._failures: dict[str, list[ProviderError]] = {}
        self._during: dict[str, list[Action]] = {}

    # ------------------------------------------------------------------ what tests do

    def pool_id(self, region: str) -> str:
        return self.fleet.regions[region].pool

    def pool_of(self, region: str) -> PoolInfo:
        return self._pools[self.pool_id(region)]

    def enabled(self, region: str) -> bool:
        return self.pool_of(region).enabled

    def set_health(self, region: str, healthy: bool | None) -> None:
        """What Cloudflare's monitor finds: every enabled origin of ``region``'s pool."""
        pool = self.pool_of(region)
        origins = tuple(replace(o, healthy=healthy) if o.enabled else o for o in pool.origins)
        self._put(replace(pool, origins=origins))

    def set_outside(
        self, region: str, *, enabled: bool | None = None, origins_enabled: bool | None = None
    ) -> None:
        """A change made outside the bot (the dashboard, another tool): not a call of ours."""
        pool = self.pool_of(region)
        if origins_enabled is not None:
            pool = replace(
                pool, origins=tuple(replace(o, enabled=origins_enabled) for o in pool.origins)
            )
        if enabled is not None:
            pool = replace(pool, enabled=enabled)
        self._put(pool)

    def fail_next(self, method: str, times: int = 1, error: ProviderError | None = None) -> None:
        """The next ``times`` calls of ``method`` raise ``error`` (Cloudflare answering 500)."""
        failure = error or ProviderError("Cloudflare failed (HTTP 500); try again shortly")
        self._failures.setdefault(method, []).extend([failure] * times)

    def during_next(self, method: str, action: Action) -> None:
        """Run ``action`` while the next call of ``method`` is in flight (before it lands)."""
        self._during.setdefault(method, []).append(action)

    def edge(self) -> LiveView:
        """What the edge applies now (not a call: what users get is routed by it)."""
        return LiveView(self.info, dict(self._pools), self.monitor_info)

    @property
    def changes(self) -> list[tuple[str, ...]]:
        """The calls that change something, in order."""
        return [c for c in self.calls if c[0].startswith("set_")]

    # ------------------------------------------------------------------ the port

    async def _call(self, method: str, *args: object) -> None:
        self.calls.append((method, *(str(a) for a in args)))
        actions = self._during.pop(method, [])
        for action in actions:
            await action()
        failures = self._failures.get(method)
        if failures:
            raise failures.pop(0)

    async def pools(self) -> list[PoolInfo]:
        await self._call("pools")
        return list(self._pools.values())

    async def pool(self, pool_id: str) -> PoolInfo:
        await self._call("pool", pool_id)
        return self._get(pool_id)

    async def pool_health(self, pool_id: str) -> PoolHealth:
        await self._call("pool_health", pool_id)
        self._get(pool_id)
        return PoolHealth(pool_id)

    async def load_balancer(self, hostname: str) -> LoadBalancerInfo:
        await self._call("load_balancer", hostname)
        if hostname != self.info.name:
            raise ProviderNotFound(f"no load balancer answers for {hostname}")
        return self.info

    async def monitor(self, monitor_id: str) -> MonitorInfo:
        await self._call("monitor", monitor_id)
        if self.monitor_info is None or self.monitor_info.id != monitor_id:
            raise ProviderNotFound(f"monitor {monitor_id} not found")
        return self.monitor_info

    async def monitors(self) -> list[MonitorInfo]:
        await self._call("monitors")
        return [self.monitor_info] if self.monitor_info else []

    async def live_view(self, hostname: str) -> LiveView:
        await self._call("live_view", hostname)
        if hostname != self.info.name:
            raise ProviderNotFound(f"no load balancer answers for {hostname}")
        return LiveView(self.info, dict(self._pools), self.monitor_info)

    async def health_events(
        self, since: datetime | None = None, pool_id: str | None = None
    ) -> list[HealthEvent]:
        await self._call("health_events", *(x for x in (since, pool_id) if x is not None))
        return [
            e
            for e in self.events
            if (since is None or e.at >= since) and (pool_id is None or e.pool_id == pool_id)
        ]

    async def set_pool_enabled(self, pool_id: str, enabled: bool) -> PoolInfo:
        await self._call("set_pool_enabled", pool_id, enabled)
        pool = self._get(pool_id)
        if pool.enabled != enabled:
            # Disabled: no longer checked; enabled again: unknown until checked.
            health = self.enabled_health if enabled else None
            origins = tuple(replace(o, healthy=health) for o in pool.origins)
            pool = replace(pool, enabled=enabled, origins=origins)
        return self._put(pool)

    async def set_origin_enabled(self, pool_id: str, origin: str, enabled: bool) -> PoolInfo:
        await self._call("set_origin_enabled", pool_id, origin, enabled)
        pool = self._get(pool_id)
        if pool.origin(origin) is None:
            raise ProviderNotFound(f"pool {pool_id} has no origin {origin}")
        origins = tuple(
            replace(o, enabled=enabled, healthy=self.enabled_health if enabled else None)
            if o.name == origin and o.enabled != enabled
            else o
            for o in pool.origins
        )
        return self._put(replace(pool, origins=origins))

    async def aclose(self) -> None:
        await self._call("aclose")

    # ------------------------------------------------------------------ inside

    def _get(self, pool_id: str) -> PoolInfo:
        if pool_id not in self._pools:
            raise ProviderNotFound(f"pool {pool_id} not found")
        return self._pools[pool_id]

    def _derived(self, pool: PoolInfo) -> PoolInfo:
        return replace(pool, healthy=_pool_health(pool, pool.monitor_id is not None))

    def _put(self, pool: PoolInfo) -> PoolInfo:
        before = self._pools.get(pool.id)
        pool = self._derived(pool)
        self._pools[pool.id] = pool
        if before is not None and before.healthy != pool.healthy and pool.enabled:
            self._record_event(before, pool)
        return pool

    def _record_event(self, before: PoolInfo, after: PoolInfo) -> None:
        was = {o.name: o.healthy for o in before.origins}
        self.events.append(
            HealthEvent(
                id=len(self.events) + 1,
                at=self.clock(),
                pool_id=after.id,
                pool_name=after.name,
                pool_healthy=after.healthy,
                pool_changed=True,
                origins=tuple(
                    OriginChange(o.name, o.address, o.healthy, was.get(o.name) != o.healthy)
                    for o in after.origins
                ),
            )
        )


# ---------------------------------------------------------------------- the channel


@dataclass(frozen=True)
class Post:
    """One call to Slack as the channel shows it."""

    method: str  # post_incident, update_incident, post_thread, post_operation, ...
    channel: str
    ts: str  # the message's (for an update: the message updated)
    thread_ts: str | None
    text: str  # in short: what a reader sees first
    at: datetime  # the bot's clock when it was sent
    incident: IncidentView | None = None
    operation: OperationView | None = None
    entries: tuple[EntryView, ...] = ()
    notice: SilenceNotice | None = None  # a silence's news, for post_silence

    @property
    def regions(self) -> set[str]:
        return {e.region for e in self.entries if e.region is not None}


class SlackDown(Exception):
    """Slack did not answer: nothing was posted."""


class Crash(BaseException):
    """The bot died (a SIGKILL) right after Slack answered: nothing after the call ran."""


class RecordingNotifier:
    """The channel: every post, update, thread reply and home view, in order."""

    def __init__(self, clock: Callable[[], datetime] | None = None) -> None:
        self.clock = clock or (lambda: datetime.now(UTC))
        self.posts: list[Post] = []
        self.homes: list[tuple[str, Dashboard]] = []
        self._count = 0
        self._fail: dict[str, int] = {}
        self._crash: set[str] = set()

    def fail_next(self, method: str, times: int = 1) -> None:
        self._fail[method] = self._fail.get(method, 0) + times

    def crash_after_next(self, method: str) -> None:
        """The next ``method`` call reaches the channel, then the bot dies."""
        self._crash.add(method)

    def _ts(self) -> str:
        self._count += 1
        return f"1700000000.{self._count:06d}"

    def _record(self, post: Post) -> str:
        if self._fail.get(post.method):
            self._fail[post.method] -= 1
            raise SlackDown(f"{post.method}: Slack is unavailable")
        self.posts.append(post)
        if post.method in self._crash:
            self._crash.discard(post.method)
            raise Crash(post.method)
        return post.ts

    # ------------------------------------------------------------------ Notifier

    async def post_incident(self, channel: str, incident: IncidentView) -> str:
        text = f"#{incident.id} {incident.title}"
        return self._record(
            Post("post_incident", channel, self._ts(), None, text, self.clock(), incident)
        )

    async def update_incident(self, channel: str, ts: str, incident: IncidentView) -> None:
        state = "closed" if incident.closed_at else "open"
        text = f"#{incident.id} {incident.title} ({state}, {len(incident.entries)} entries)"
        self._record(Post("update_incident", channel, ts, None, text, self.clock(), incident))

    async def post_thread(
        self,
        channel: str,
        thread_ts: str,
        incident: IncidentView,
        entries: Sequence[EntryView],
        *,
        reminder: bool = False,
    ) -> str:
        text = "reminder" if reminder else " + ".join(f"{e.kind} {e.region}" for e in entries)
        return self._record(
            Post(
                "post_thread", channel, self._ts(), thread_ts, text, self.clock(), incident,
                entries=tuple(entries),
            )
        )  # fmt: skip

    async def post_silence(self, channel: str, notice: SilenceNotice) -> str:
        text = silence_notice_text(notice)  # what the channel reads
        return self._record(
            Post("post_silence", channel, self._ts(), None, text, self.clock(), notice=notice)
        )

    # ------------------------------------------------------------------ OperationNotifier

    async def post_operation(self, channel: str, op: OperationView) -> str:
        text = f"{op.kind} #{op.id} of {op.region}: {op.state}"
        return self._record(
            Post("post_operation", channel, self._ts(), None, text, self.clock(), operation=op)
        )

    async def update_operation(self, channel: str, ts: str, op: OperationView) -> None:
        text = f"{op.kind} #{op.id} of {op.region}: {op.state}"
        self._record(Post("update_operation", channel, ts, None, text, self.clock(), operation=op))

    async def post_operation_note(self, channel: str, thread_ts: str, text: str) -> str:
        return self._record(
            Post("post_operation_note", channel, self._ts(), thread_ts, text, self.clock())
        )

    # ------------------------------------------------------------------ HomePublisher

    async def publish_home(self, user: str, dashboard: Dashboard, at: datetime) -> None:
        self.homes.append((user, dashboard))

    # ------------------------------------------------------------------ reading it

    def of(self, *methods: str) -> list[Post]:
        return [p for p in self.posts if p.method in methods]

    def texts(self, *methods: str) -> list[str]:
        return [p.text for p in self.of(*methods)]

    def thread(self, ts: str) -> list[Post]:
        """The replies under the message ``ts``, in order."""
        return [p for p in self.posts if p.thread_ts == ts]

    def notes(self) -> list[str]:
        """Operation thread notes without their time prefix ("14:00:00 UTC · ")."""
        return [p.text.split(" · ", 1)[-1] for p in self.of("post_operation_note")]


# ---------------------------------------------------------------------- users' view


class UsersView(Vantages):
    """What users get from the public hostname, routed by the fake load balancer as Cloudflare's
    edge would route them: from the bot's location (in geo ``here``) and from each relay.

    ``before_each`` runs before every sample (e.g. the watch reading Cloudflare meanwhile).
    """

    def __init__(
        self,
        lb: FakeLoadBalancer,
        fleet: Fleet,
        here: str = "WEU",
        before_each: Action | None = None,
    ) -> None:
        # Not Vantages.__init__: no HTTP client, nothing is fetched.
        self.fleet = fleet
        self.lb = lb
        self.here = here
        self.before_each = before_each
        self.samples = 0

    def _user(self, where: str, geo: str | None) -> PublicCheck:
        edge = self.lb.edge()
        pools = edge.pools
        r = routing_table(edge.load_balancer, pools)[geo or self.here]
        region = self.fleet.region_of_pool(r.pool_id or "")
        if r.healthy:
            return PublicCheck(where, geo, status=200, latency=0.01, region=region)
        fallback = pools.get(r.pool_id or "")
        status = 530 if fallback is None or not fallback.enabled else 521
        return PublicCheck(where, geo, status=status, latency=0.01, region=region)

    async def check(self, budget: float) -> list[PublicCheck]:
        self.samples += 1
        if self.before_each is not None:
            await self.before_each()
        location = self.fleet.public.location if self.fleet.public else "the bot's location"
        checks = [self._user(location, None)]
        return checks + [self._user(f"relay {r.geo}", r.geo) for r in self.fleet.relays]


class ScriptedVantages(Vantages):
    """Answers given in order, one list per sample; the last one repeats."""

    def __init__(self, fleet: Fleet, answers: Iterable[list[PublicCheck]]) -> None:
        self.fleet = fleet
        self.answers = list(answers)
        self.samples = 0

    async def check(self, budget: float) -> list[PublicCheck]:
        self.samples += 1
        return self.answers[min(self.samples, len(self.answers)) - 1]


def _conforms(fleet: Fleet) -> tuple[LoadBalancer, ChannelNotifier]:
    """mypy checks here that the fakes implement the ports."""
    return FakeLoadBalancer(fleet), RecordingNotifier()
