"""``/failover silence <region> [duration] [reason]``, ``silences``, ``unsilence <region>``."""

from datetime import timedelta

from bot import silences
from bot.durations import format_duration, parse_duration
from bot.errors import UsageError
from bot.views.reply import Reply, context, section
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


async def silence_region(ctx: Context, region: str, length: timedelta, reason: str) -> Reply:
    now = ctx.services.clock()
    who = ctx.invocation.user_name or ctx.invocation.user_id
    async with ctx.services.db().begin() as session:
        row = await silences.silence(session, region, length, reason, who, now)
        until = row.until
    text = (
        f"Silenced {region} for {format_duration(length.total_seconds())}, "
        f"until {until:%H:%M} UTC: "
        f"no thread replies for it (recoveries still post). `/failover unsilence {region}` ends it."
    )
    return Reply(text=text, blocks=[section(f":no_bell: {text}"), context(f"reason: {reason}")])


async def silence(args: list[str], ctx: Context) -> Reply:
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
    now = ctx.services.clock()
    async with ctx.services.db()() as session:
        rows = await silences.active(session, now)
    if not rows:
        return Reply(text="No region is silenced.", blocks=[section("No region is silenced.")])
    lines = [
        f"• *{s.region}* until {s.until:%H:%M} UTC "
        f"({format_duration((s.until - now).total_seconds())} left) "
        f"by {s.created_by}: {s.reason}"
        for s in rows
    ]
    return Reply(text=f"{len(rows)} silences", blocks=[section("*Silences*\n" + "\n".join(lines))])


async def unsilence(args: list[str], ctx: Context) -> Reply:
    if len(args) != 1:
        raise UsageError("Name one region.", UNSILENCE_USAGE)
    region = region_of(args[0], ctx, UNSILENCE_USAGE)
    async with ctx.services.db().begin() as session:
        ended = await silences.unsilence(session, region, ctx.services.clock())
    text = (
        f"{region} is no longer silenced."
        if ended
        else f"{region} was not silenced: nothing to do."
    )
    return Reply(text=text, blocks=[section(text)])


SILENCE = Command(
    "silence",
    SILENCE_USAGE,
    "Mute a region's alert replies for a while (default 1h, at most 24h); recoveries still post.",
    silence,
)
SILENCES = Command("silences", "silences", "The silences in force.", list_silences)
UNSILENCE = Command("unsilence", UNSILENCE_USAGE, "End a region's silence.", unsilence)
