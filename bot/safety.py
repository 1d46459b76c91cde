"""Rules for changes that move traffic, with reasons (pure).

Before any change: the blast radius (per geo region, the pool serving it now and after, and that
pool's health) and the rules. A change is refused when it would leave a geo region without a
healthy enabled pool; the fallback pool may be changed only while every region keeps another
healthy enabled pool, and only with an approver's approval; nothing moves while a drill runs or
another change is settling; a pool is not changed twice within the settle time. Break-glass
overrides a named rule (recorded and shown loudly by the caller), never the approval.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from bot.fleet import DAYS, BlockedWindow, Fleet
from bot.lbmodel import LiveView, PoolInfo
from bot.routing import Users, healthy_enough, routing_table, stranded_users


class Rule(StrEnum):
    NO_HEALTHY_POOL = "no-healthy-pool"
    FALLBACK_POOL = "fallback-pool"
    DRILL_RUNNING = "drill-running"
    IN_FLIGHT = "change-in-flight"
    TOO_SOON = "too-soon"


@dataclass(frozen=True)
class Proposal:
    kind: str  # drain, drill
    region: str
    origin: str | None = None


@dataclass(frozen=True)
class InFlight:
    """An operation that has changed, or is changing, the load balancer."""

    kind: str
    region: str
    changed_at: datetime | None  # when its last change was applied; None while applying
    finished: bool = False  # a drill or restore that has ended
    id: int | None = None  # its number, so that a refusal names it as its messages do
    doing: str = "applied"  # while changing: being "applied" or "restored"


# Worse and worse for a user: served, what an unhealthy fallback's origins answer, a 530.
HARM = {Users.SERVED: 0, Users.ORIGIN_ERRORS: 1, Users.ERROR_1016: 2}


@dataclass(frozen=True)
class BlastRow:
    geo: str
    now: str
    after: str
    after_healthy: bool
    now_healthy: bool = True
    after_users: str = ""  # what its users would get when no healthy pool serves them
    worse: bool = False  # its users would get something worse than now

    @property
    def moves(self) -> bool:
        """Served by another pool after the change, or no longer as well served."""
        return self.now != self.after or self.worse

    def stored(self) -> list[object]:
        """As kept with an operation (JSON), for its message and for the watch."""
        return [self.geo, self.now, self.after, self.after_healthy, self.now_healthy,
                self.after_users, self.worse]  # fmt: skip

    @classmethod
    def from_stored(cls, row: Sequence[object]) -> BlastRow:
        geo, now, after, after_healthy, *rest = row  # older rows have the first four only
        return cls(str(geo), str(now), str(after), bool(after_healthy), *rest)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Refusal:
    rule: Rule
    text: str
    retry_after: int | None = None  # seconds until this rule allows it, where time is all it needs


@dataclass(frozen=True)
class Assessment:
    blast: list[BlastRow]
    refusals: list[Refusal]
    overridden: list[Refusal]
    needs_approval: bool
    noop: str | None = None

    @property
    def allowed(self) -> bool:
        return not self.refusals and self.noop is None


def after_change(view: LiveView, pool: PoolInfo, origin: str | None) -> dict[str, PoolInfo]:
    """The pools as they would be once ``pool`` (or one origin of it) is disabled."""
    pools = dict(view.pools)
    if origin is None:
        pools[pool.id] = replace(pool, enabled=False)
        return pools
    origins = tuple(replace(o, enabled=False) if o.name == origin else o for o in pool.origins)
    # Unhealthy or unknown stays so; a healthy pool stays healthy while enough origins remain
    # (an origin Cloudflare reports nothing for is taken at the pool's word: healthy).
    up = [o.healthy is not False for o in origins if o.enabled]
    healthy = healthy_enough(up, pool.minimum_origins) if pool.healthy is True else pool.healthy
    pools[pool.id] = replace(pool, origins=origins, healthy=healthy)
    return pools


def blast_radius(fleet: Fleet, view: LiveView, after: Mapping[str, PoolInfo]) -> list[BlastRow]:
    def name(pools: Mapping[str, PoolInfo], pool_id: str | None) -> str:
        pool = pools.get(pool_id or "")
        return (fleet.region_of_pool(pool.name) or pool.name) if pool else "none"

    now = routing_table(view.load_balancer, view.pools)
    later = routing_table(view.load_balancer, after)
    rows = []
    for geo, r in later.items():
        to = name(after, r.pool_id)
        rows.append(
            BlastRow(
                geo,
                name(view.pools, now[geo].pool_id),
                to,
                r.healthy,
                now[geo].healthy,
                "" if r.healthy else stranded_users(r.users, to),
                HARM[r.users] > HARM[now[geo].users],
            )
        )
    return rows


def assess(
    proposal: Proposal,
    fleet: Fleet,
    view: LiveView,
    operations: Sequence[InFlight],
    now: datetime,
    break_glass: Collection[Rule] = (),
) -> Assessment:
    region = fleet.regions[proposal.region]
    pool = view.pool_by_name(region.pool)
    if pool is None:
        raise LookupError(
            f"pool {region.pool} of {proposal.region} is not in the load balancer's account"
        )
    noop = None
    if proposal.kind == "drain" and proposal.origin is None and not pool.enabled:
        noop = (
            f"{proposal.region} is already drained (pool {pool.name} is disabled): nothing to do."
        )
    live_origin = pool.origin(proposal.origin) if proposal.origin else None
    if proposal.origin is not None and live_origin is not None and not live_origin.enabled:
        noop = f"origin {proposal.origin} of {proposal.region} is already disabled: nothing to do."
    after = after_change(view, pool, proposal.origin)
    blast = blast_radius(fleet, view, after)
    refusals: list[Refusal] = []
    # Geo regions already without a healthy pool, and no worse off after, are not this change's.
    stranded: dict[str, list[str]] = {}
    for row in blast:
        if not row.after_healthy and row.moves:
            stranded.setdefault(row.after_users, []).append(row.geo)
    is_fallback = view.load_balancer.fallback_pool == pool.id
    if stranded:
        text = "; ".join(
            f"{' '.join(geos)} would be left without a healthy enabled pool: {users}"
            for users, geos in stranded.items()
        )
        refusals.append(Refusal(Rule.NO_HEALTHY_POOL, text))
        if is_fallback:
            refusals.append(
                Refusal(
                    Rule.FALLBACK_POOL,
                    f"{proposal.region} is the fallback pool: it may be changed only while "
                    "every geo region keeps another healthy enabled pool",
                )
            )
    settle = timedelta(seconds=fleet.operations.settle)
    for op in operations:
        name = f"{op.kind} #{op.id}" if op.id is not None else op.kind
        if op.kind == "drill" and not op.finished:
            text = (
                f"{name if op.id is not None else 'a drill'} of {op.region} is running: it ends "
                "by itself, or `/failover drill cancel` stops it"
            )
            refusals.append(Refusal(Rule.DRILL_RUNNING, text))
        elif op.changed_at is None and not op.finished:
            # Its change lands within a pass of the driver (about a second), then it settles.
            wait = int(settle.total_seconds()) + 2
            text = (
                f"the {name} of {op.region} is being {op.doing}, then settles for "
                f"{settle.total_seconds():.0f} s: retry after about {wait} s"
            )
            refusals.append(Refusal(Rule.IN_FLIGHT, text, wait))
        elif op.changed_at is not None and now - op.changed_at < settle:
            ago = int((now - op.changed_at).total_seconds())
            left = int((settle - (now - op.changed_at)).total_seconds()) + 1
            if op.region == proposal.region:
                text = f"{op.region} changed {ago} s ago ({name}): retry after {left} s"
                refusals.append(Refusal(Rule.TOO_SOON, text, left))
            else:
                text = f"the {name} of {op.region} is still settling: retry after {left} s"
                refusals.append(Refusal(Rule.IN_FLIGHT, text, left))
    unique = list(dict.fromkeys(refusals))
    overridden = [r for r in unique if r.rule in break_glass]
    return Assessment(
        blast=blast,
        refusals=[r for r in unique if r.rule not in break_glass],
        overridden=overridden,
        needs_approval=is_fallback,
        noop=noop,
    )


def blocked_by(windows: Sequence[BlockedWindow], at: datetime) -> str | None:
    """The reason of the first blocked window ``at`` (UTC) falls in, if any."""
    day = DAYS[at.weekday()]
    hhmm = f"{at:%H:%M}"
    for w in windows:
        if w.days and day not in [d.lower() for d in w.days]:
            continue
        if w.date is not None and w.date != f"{at:%Y-%m-%d}":
            continue
        if w.start is not None and w.end is not None:
            inside = (
                (w.start <= hhmm < w.end) if w.start <= w.end else (hhmm >= w.start or hhmm < w.end)
            )
            if not inside:
                continue
        return w.reason
    return None
