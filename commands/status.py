"""``/failover status [region] [public]``."""

from bot.errors import UsageError
from bot.views.reply import Reply
from bot.views.status import status_reply
from commands.base import Command, Context
from commands.parsing import pick

USAGE = "status [region] [public]"


async def run(args: list[str], ctx: Context) -> Reply:
    fleet = ctx.services.fleet
    public = False
    regions: list[str] = []
    for word in args:
        if word.lower() == "public":
            public = True
            continue
        region = pick(word, fleet.regions)
        if region is None:
            known = ", ".join(f"`{r}`" for r in fleet.regions)
            raise UsageError(f"Unknown region `{word}`. Known regions: {known}.", USAGE)
        if region not in regions:
            regions.append(region)
    status = await ctx.services.status.check(regions or None)
    m = fleet.monitor
    desc = f"{m.method} {m.path} expecting {m.expected_codes} and {m.expected_body}"
    return status_reply(status, desc, public=public)


COMMAND = Command(
    name="status",
    usage=USAGE,
    summary=(
        "Health of every region (or one) from every angle: the bot's own probes, Cloudflare's "
        "view and routing, what users get. Only you see it; add `public` to post it."
    ),
    run=run,
)
