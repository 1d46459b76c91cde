"""``/failover whatif <region> [down|disabled] [<region> [down|disabled] ...]``: a dry run of an
outage against the live configuration (or failover.toml without Cloudflare). Changes nothing."""

from bot.errors import ProviderError, UsageError
from bot.planned import planned_view
from bot.views.reply import Reply
from bot.views.whatif import whatif_reply
from bot.whatif import STATES, what_if
from commands.base import Command, Context
from commands.parsing import pick

USAGE = "whatif <region> [down|disabled] [<region> [down|disabled] ...]"


def parse(args: list[str], regions: list[str]) -> dict[str, str]:
    changes: dict[str, str] = {}
    last: str | None = None
    for word in args:
        state = pick(word, STATES)
        if state is not None:
            if last is None:
                raise UsageError(f"`{word}` needs a region before it.", USAGE)
            changes[last] = state
            continue
        region = pick(word, regions)
        if region is None:
            known = ", ".join(f"`{r}`" for r in regions)
            raise UsageError(
                f"`{word[:40]}` is neither a region nor a state. Known regions: {known}; "
                "states: `down` (the default), `disabled`.",
                USAGE,
            )
        changes[region] = "down"
        last = region
    if not changes:
        raise UsageError("Name at least one region.", USAGE)
    return changes


async def run(args: list[str], ctx: Context) -> Reply:
    fleet = ctx.services.fleet
    changes = parse(args, list(fleet.regions))
    lb = ctx.services.loadbalancer
    source = "failover.toml (Cloudflare is not configured)"
    view = planned_view(fleet)
    if lb is not None:
        try:
            view = await lb.live_view(fleet.load_balancer.hostname)
            source = "the live configuration and health"
        except ProviderError as exc:
            source = f"failover.toml (Cloudflare could not be read: {exc})"
    return whatif_reply(what_if(fleet, view, changes), source)


COMMAND = Command(
    name="whatif",
    usage=USAGE,
    summary=(
        "Where every geo region's traffic would go if regions were down or disabled, what users "
        "would get, and how long Cloudflare would need to notice. Only you see it; nothing changes."
    ),
    run=run,
)
