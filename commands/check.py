"""``/failover check``: the live load balancer against the plan in failover.toml."""

from datetime import UTC, datetime, timedelta

from bot.errors import ProviderAuthError, ProviderError, UsageError
from bot.plancheck import CheckLine, check_plan
from bot.views.check import check_reply
from bot.views.errors import usage_error
from bot.views.reply import Reply
from commands.base import Command, Context

USAGE = "check"
NOT_CONFIGURED = (
    "Cloudflare is not configured, so there is nothing live to check: set CLOUDFLARE_API_TOKEN, "
    "CLOUDFLARE_ACCOUNT_ID and CLOUDFLARE_ZONE_ID."
)


async def run(args: list[str], ctx: Context) -> Reply:
    if args:
        raise UsageError(f"`check` takes no arguments (got `{' '.join(args)}`).", USAGE)
    services = ctx.services
    if services.loadbalancer is None:
        return usage_error(NOT_CONFIGURED)
    status = await services.status.check()
    view = status.cloudflare.view if status.cloudflare else None
    if view is None:
        why = status.cloudflare.error if status.cloudflare else "not read"
        return usage_error(f"Cannot check the load balancer: {why}.")
    lines = check_plan(services.fleet, view, {r.region.name: r.state for r in status.regions})
    try:
        await services.loadbalancer.health_events(since=datetime.now(UTC) - timedelta(hours=1))
        lines.append(
            CheckLine("health events", True, "readable (the bot catches up after downtime)")
        )
    except ProviderAuthError as exc:
        lines.append(
            CheckLine(
                "health events",
                False,
                f"{exc}; the bot carries on without them",
                "add the permission",
            )
        )
    except ProviderError as exc:
        lines.append(CheckLine("health events", False, str(exc)))
    return check_reply(lines, view.load_balancer.name)


COMMAND = Command(
    name="check",
    usage=USAGE,
    summary=(
        "The live load balancer held against failover.toml and the seed's checklist: monitor, "
        "pool order, fallback, geo map, affinity, pools and origins. Each line passes or says "
        "how to fix it."
    ),
    run=run,
)
