"""``/failover silence <region> [duration] [reason]``, ``silences``, ``unsilence <region>``."""

from datetime import timedelta

from bot import silences
from bot.durations import format_duration, parse_duration
from bot.errors import UsageError
from bot.silences import Silences
from bot.views.errors import usage_error
from bot.views.reply import Reply
from bot.views.silences import silenced_reply, silences_reply, unsilenced_reply
from commands.base import Command, Context
from commands.parsing import pick

SILENCE_USAGE = "silence <region> [duration] [reason]"
UNSILENCE_USAGE = "unsilence <region>"


def region_of(word: str, ctx: Context, usage: str) -> str:
    region = pick(word, ctx.services.fleet.regions)
    if region is None:
        known = ", ".join(f"`{r}`" for r in ctx.services.fleet.regions)
        raise UsageError(f"Unknown region `{word}`. Known regions: {known}.", usage)
    return region


def silences_of(ctx: Context) -> Silences:
    if ctx.services.silences is None:
        raise UsageError("Silences need the database, which is not set up here.")
    return ctx.services.silences


async def require_operator(ctx: Context, verb: str) -> Reply | None:
    """A silence mutes the channel for everyone, so only operators set or end one (the Silence
    button asks again); ``None`` when the asker is one, else the refusal to show them."""
    access = ctx.services.access
    if access is not None and await access.is_operator(ctx.invocation.user_id):
        return None
    if access is None:
        return usage_error(f"Only operators may {verb}; no operators are configured.")
    # the roster is the bot's own mentions from [access], so it stays markup
    return usage_error(
        f"Only operators may {verb}.", roster=f"Operators: {access.who('operator')}."
    )


async def silence_region(ctx: Context, region: str, length: timedelta, reason: str) -> Reply:
    who = ctx.invocation.user_name or ctx.invocation.user_id
    row = await silences_of(ctx).silence(region, length, reason, who)
    return silenced_reply(row, length.total_seconds())


async def silence(args: list[str], ctx: Context) -> Reply:
    if (denied := await require_operator(ctx, "silence alerts")) is not None:
        return denied
    if not args:
        raise UsageError("Say which region to silence.", SILENCE_USAGE)
    region = region_of(args[0], ctx, SILENCE_USAGE)
    rest = args[1:]
    length = silences.DEFAULT
    if rest:
        try:
            length = timedelta(seconds=parse_duration(rest[0]))
            rest = rest[1:]
        except ValueError:
            pass  # not a duration: the reason starts here
    if length > silences.MAXIMUM or length <= timedelta(0):
        raise UsageError(
            f"A silence lasts up to 24 h (got {format_duration(length.total_seconds())}).",
            SILENCE_USAGE,
        )
    return await silence_region(ctx, region, length, " ".join(rest) or "no reason given")


async def list_silences(args: list[str], ctx: Context) -> Reply:
    return silences_reply(await silences_of(ctx).active(), ctx.services.clock())


async def unsilence(args: list[str], ctx: Context) -> Reply:
    if (denied := await require_operator(ctx, "unsilence alerts")) is not None:
        return denied
    if len(args) != 1:
        raise UsageError("Name one region.", UNSILENCE_USAGE)
    region = region_of(args[0], ctx, UNSILENCE_USAGE)
    who = ctx.invocation.user_name or ctx.invocation.user_id
    return unsilenced_reply(region, await silences_of(ctx).unsilence(region, who))


SILENCE = Command(
    "silence",
    SILENCE_USAGE,
    "Operators: mute a region's thread replies for a while (default 1h, at most 24h); "
    "incident messages and recoveries still post, and the channel is told.",
    silence,
)
SILENCES = Command("silences", "silences", "The silences in force.", list_silences)
UNSILENCE = Command(
    "unsilence",
    UNSILENCE_USAGE,
    "Operators: end a region's silence (the channel is told).",
    unsilence,
)
