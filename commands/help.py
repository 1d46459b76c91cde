"""``/failover help``."""

from bot.views.help import help_reply
from bot.views.reply import Reply
from commands.base import Command, Context


async def run(args: list[str], ctx: Context) -> Reply:
    return help_reply(ctx.commands, ctx.services.fleet.regions)


COMMAND = Command(
    name="help",
    usage="help",
    summary="This list of commands.",
    run=run,
)
