"""``/failover check``: the live load balancer against failover.toml, and the plan reviewed as
Cloudflare will run it (from failover.toml alone when Cloudflare is not configured)."""

from datetime import UTC, datetime, timedelta

from bot.errors import ProviderAuthError, ProviderError, UsageError
from bot.plancheck import CheckLine, check_plan
from bot.planned import planned_view
from bot.planreview import review_plan
from bot.views.check import check_reply
from bot.views.reply import Reply
from commands.base import Command, Context

USAGE = "check"


async def _events_line(ctx: Context) -> CheckLine:
    assert ctx.services.loadbalancer is not None
    try:
        await ctx.services.loadbalancer.health_events(since=datetime.now(UTC) - timedelta(hours=1))
        return CheckLine("health events", True, "readable (the bot catches up after downtime)")
    except ProviderAuthError as exc:
        return CheckLine(
            "health events", False, f"{exc}; the bot carries on without them", "add the permission"
        )
    except ProviderError as exc:
        return CheckLine("health events", False, str(exc))


async def run(args: list[str], ctx: Context) -> Reply:
    if args:
        raise UsageError(f"`check` takes no arguments (got `{' '.join(args)}`).", USAGE)
    services = ctx.services
    fleet = services.fleet
    if services.loadbalancer is None:
        plan = review_plan(fleet, planned_view(fleet))
        source = "failover.toml; Cloudflare is not configured, so nothing live is checked"
        return check_reply([], plan, fleet.load_balancer.hostname, source)
    status = await services.status.check()
    view = status.view
    if view is None:
        why = status.cloudflare.error if status.cloudflare else "not read"
        plan = review_plan(fleet, planned_view(fleet))
        source = f"failover.toml; Cloudflare could not be read: {why}"
        return check_reply([], plan, fleet.load_balancer.hostname, source)
    live = check_plan(fleet, view, {r.region.name: r.state for r in status.regions})
    live.append(await _events_line(ctx))
    plan = review_plan(fleet, view)
    stale = view.staleness(status.checked_at)
    source = "the live load balancer" + (f"; {stale}" if stale else "")
    return check_reply(live, plan, view.load_balancer.name, source)


COMMAND = Command(
    name="check",
    usage=USAGE,
    summary=(
        "The live load balancer against failover.toml (monitor, pools, origins, fallback, geo "
        "map), then the plan as Cloudflare will run it: each geo region's failover path, the "
        "fallback, detection against the RTO target, overrides. Each line passes or says the fix."
    ),
    run=run,
)
