"""``/failover status``: the verdict first (gray failures before anything), then each angle."""

from __future__ import annotations

from collections import defaultdict

from slack_sdk.models.blocks import Block, HeaderBlock

from bot.durations import format_duration
from bot.fleetstatus import FleetStatus, RegionStatus
from bot.monitor import PoolState
from bot.observations import ProbeResult
from bot.reads import PublicCheck
from bot.routing import Route, Users, Via, effective_policy
from bot.views.reply import Reply, context, section
from bot.views.text import escape

STATE_EMOJI = {
    PoolState.HEALTHY: ":large_green_circle:",
    PoolState.DEGRADED: ":large_yellow_circle:",
    PoolState.DOWN: ":red_circle:",
    PoolState.DISABLED: ":white_circle:",
    PoolState.UNKNOWN: ":grey_question:",
}
MAX_ORIGINS_SHOWN = 12  # a section holds 3,000 characters; list the worst first


def _origin_line(p: ProbeResult) -> str:
    latency = f", {format_duration(p.latency)}" if p.latency is not None else ""
    if p.healthy:
        return f"• `{escape(p.origin)}` healthy{latency}"
    tries = f", {p.attempts} attempts" if p.attempts > 1 else ""
    # the reason may quote the gateway's answer (its failing checks): the gateway's words
    return f"• `{escape(p.origin)}` *{escape(p.reason)}*{latency}{tries}"


def _cloudflare_line(rs: RegionStatus) -> str | None:
    pool = rs.pool
    if pool is None:
        return None
    if not pool.enabled:
        return "  Cloudflare: pool *disabled* (no traffic, no health checks)"
    if pool.healthy is None and pool.monitor_id is None:
        return "  Cloudflare: no monitor attached, so it is never marked unhealthy"
    if pool.healthy is None:
        return (
            "  Cloudflare: health *unknown* until its first check since it was enabled "
            "(no traffic until then)"
        )
    if pool.healthy:
        return "  Cloudflare: healthy"
    why = f": {escape(rs.cloudflare_reasons)}" if rs.cloudflare_reasons else ""
    return f"  Cloudflare: *unhealthy*{why}"


def _region_block(status: FleetStatus, rs: RegionStatus) -> Block:
    r = rs.region
    head = (
        f"{STATE_EMOJI[rs.state]} *{escape(r.name)}* ({escape(r.role)}) · "
        f"pool `{escape(r.pool)}` · *{rs.state}*"
    )
    worst_first = sorted(rs.probes, key=lambda p: (p.healthy, p.origin))
    lines = [_origin_line(p) for p in worst_first[:MAX_ORIGINS_SHOWN]]
    hidden = len(worst_first) - MAX_ORIGINS_SHOWN
    if hidden > 0:
        lines.append(f"• … and {hidden} more")
    cf = _cloudflare_line(rs)
    noticing = status.noticing(rs)
    extra = [cf] if cf else []
    if noticing:
        extra.append(f"  _{escape(noticing)}_")
    return section("\n".join([head, *lines, *extra]))


def _routing_block(status: FleetStatus) -> Block | None:
    routes = status.routes
    if not routes:
        return None
    by_pool: dict[str, list[str]] = defaultdict(list)
    moved: dict[tuple[str, str], list[str]] = defaultdict(list)  # (to, note) -> geos
    for geo, route in routes.items():
        region = status.region_of_pool(route.pool_id)
        by_pool[region].append(geo)
        if route.away:
            moved[(region, _route_note(status, route))].append(geo)
    lb = status.view.load_balancer if status.view else None
    policy = f"{effective_policy(lb)} steering" if lb else "steering"
    lines = [f"*Routing* (Cloudflare's {policy}, by its own health)"]
    for region, geos in by_pool.items():
        # geo codes are the keys of Cloudflare's region_pools: its account's words too
        notes = [f"{escape(' '.join(g))}: {n}" for (to, n), g in moved.items() if to == region]
        extra = f"  _({'; '.join(notes)})_" if notes else ""
        lines.append(f"• *{escape(region)}* ← {escape(' '.join(geos))}{extra}")
    return section("\n".join(lines))


def _route_note(status: FleetStatus, route: Route) -> str:
    home = status.region_of_pool(route.preferred)
    if route.users is Users.ERROR_1016:
        return (
            "no healthy pool; the fallback is disabled: *users get Cloudflare's 530 (error 1016)*"
        )
    if route.users is Users.ORIGIN_ERRORS:
        return "no healthy pool, on the unhealthy fallback: *users get errors*"
    if route.via is Via.FALLBACK:
        return f"on the fallback: no healthy pool in their list (from {escape(home)})"
    return f"failed over from {escape(home)}"


# Cloudflare's own error pages (support: "Troubleshooting Cloudflare 5XX errors"): no origin
# answered, so nothing names the region that served.
EDGE_ERRORS = {
    520: "an unknown error from the origin",
    521: "the origin refused the connection",
    522: "the connection to the origin timed out",
    523: "the origin is unreachable",
    524: "the origin did not answer in time",
    530: "no origin to send it to (error 1016 when the fallback is disabled)",
}


def _public_line(check: PublicCheck) -> str:
    # a relay's error, what the answer said and its Retry-After are a peer's words
    where = escape(check.where)
    if check.error:
        if check.error.startswith(check.where):  # "relay WEU answered nonsense (…)"
            return f"• *{escape(check.error)}*"
        return f"• {where}: *{escape(check.error)}*"
    served = escape(
        check.region or (f"unknown (answer said {check.said!r})" if check.said else "unknown")
    )
    if check.region is None and check.status in EDGE_ERRORS:
        served = f"Cloudflare's edge: {EDGE_ERRORS[check.status]}"
    latency = f", {format_duration(check.latency)}" if check.latency is not None else ""
    retry = (
        f", Retry-After {escape(check.retry_after)}" if check.retry_after and not check.ok else ""
    )
    mark = "" if check.ok else "*"
    return f"• {where}: {mark}HTTP {check.status}{mark}{latency}, served by {served}{retry}"


def _settings_line(status: FleetStatus) -> str | None:
    view = status.cloudflare.view if status.cloudflare else None
    if view is None:
        return None
    lb = view.load_balancer
    order = " › ".join(status.region_of_pool(p) for p in lb.default_pools)
    # names and settings as Cloudflare holds them: whoever edits the account wrote them
    fallback = status.region_of_pool(lb.fallback_pool)
    text = escape(
        f"`{lb.name}` · {effective_policy(lb)} steering · default {order} · "
        f"fallback {fallback} · affinity {lb.session_affinity}"
    )
    if view.monitor is not None:
        m = view.monitor
        text += escape(
            f" · monitor {m.method} {m.path} every {m.interval:g} s, timeout {m.timeout:g} s, "
            f"{m.retries} retries"
        )
    return text


def status_reply(status: FleetStatus, probe_desc: str, public: bool = False) -> Reply:
    icon = ":white_check_mark:" if status.healthy else ":rotating_light:"
    verdict = status.verdict
    head = f"{'✅' if status.healthy else '🚨'} {verdict}"
    if len(head) > 150:  # Slack's limit for a header; the whole verdict follows in a section
        head = head[:149].rsplit(" ", 1)[0].rstrip(";:,") + "…"
    blocks: list[Block] = [HeaderBlock(text=head)]
    if len(verdict) > 140 or status.gray_failures:
        blocks.append(section(f":warning: {escape(verdict)}"))
    blocks += [_region_block(status, rs) for rs in status.regions]
    routing = _routing_block(status)
    if routing is not None:
        blocks.append(routing)
    if status.public:
        lines = ["*What users get* from the public hostname"]
        lines += [_public_line(c) for c in status.public]
        blocks.append(section("\n".join(lines)))
    cf = status.cloudflare
    if cf is None:
        blocks.append(
            context("Cloudflare: not configured (set CLOUDFLARE_API_TOKEN, _ACCOUNT_ID, _ZONE_ID)")
        )
    elif cf.view is None:
        blocks.append(context(f":warning: Cloudflare's view is missing: {escape(cf.error)}"))
    elif (stale := cf.view.staleness(status.checked_at)) is not None:
        blocks.append(context(f":warning: Cloudflare's view: {escape(stale)}"))
    for note in status.notes:
        blocks.append(context(f":warning: Routing table: {escape(note)}"))
    settings = _settings_line(status)
    if settings:
        blocks.append(context(settings))
    age = cf.view.age(status.checked_at) if cf is not None and cf.view is not None else None
    read = f" · Cloudflare's view {format_duration(age)} old" if age is not None else ""
    blocks.append(
        context(
            f"Bot's probes from where the bot runs · {status.checked_at:%H:%M:%S} UTC · "
            f"took {format_duration(status.elapsed)}{read} · {escape(probe_desc)}"
        )
    )
    # the header is plain_text (never parsed); the fallback text is mrkdwn
    text = f"{icon} Failover status: {escape(verdict)}"
    return Reply(text=text, blocks=blocks, public=public)
