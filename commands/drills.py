"""``/failover drill <region>``, ``drill cancel``, ``drill report <id>``, ``drills``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.errors import UsageError
from bot.safety import Proposal, blocked_by
from bot.views.operations import (
    cancel_reply,
    drill_report_reply,
    drills_reply,
    dry_run_reply,
    proposal_reply,
    refusal_reply,
)
from bot.views.reply import Reply
from commands.base import Command, Context
from commands.drains import operations, require_operator
from commands.parsing import Option, parse_options, record_id
from commands.silences import region_of

USAGE = "drill <region> [--at <UTC time>] [--dry-run] | drill cancel [<id>] | drill report [<id>]"
MAX_AHEAD = timedelta(days=30)


def parse_at(text: str, now: datetime) -> datetime:
    """``14:00`` (the next one), ``2026-12-01 14:00`` or ``2026-12-01T14:00``, all UTC."""
    cleaned = text.strip().upper().removesuffix("UTC").strip().replace("T", " ")
    try:
        if len(cleaned) == 5 and cleaned[2] == ":":
            hour, minute = int(cleaned[:2]), int(cleaned[3:])
            at = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
            at = at if at > now else at + timedelta(days=1)
        else:
            at = datetime.strptime(cleaned, "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"`{text}` is not a UTC time: use 14:00 or 2026-12-01 14:00.") from None
    if at <= now or at - now > MAX_AHEAD:
        raise ValueError(f"{at:%Y-%m-%d %H:%M} UTC must be in the future, within 30 days.")
    return at


async def drill(args: list[str], ctx: Context) -> Reply:
    if not args:
        raise UsageError("Say which region to drill.", USAGE)
    if args[0].lower() == "report":
        return await report(args[1:], ctx)
    if (denied := await require_operator(ctx)) is not None:
        return denied
    ops = operations(ctx)
    if args[0].lower() == "cancel":
        if not ops.channel:
            raise UsageError("No drill can run here: the watch is off (SLACK_CHANNEL is not set).")
        if len(args) > 2:
            raise UsageError("`drill cancel` takes one drill's number, or none.", USAGE)
        if len(args) == 2:
            number = operation_number(args[1], "a drill", USAGE)
            named = await ops.operation(number)
            if named is None or named.kind != "drill":
                raise UsageError(
                    f"There is no drill #{number}. `/failover drills` lists them.", USAGE
                )
            c = await ops.cancel(number, ctx.invocation.user_id)
            return cancel_reply(c.outcome, c.op, c.was, f"drill #{number}")
        c = await ops.cancel(await ops.drill_to_cancel(), ctx.invocation.user_id)
        return cancel_reply(c.outcome, c.op, c.was, "drill running or scheduled")
    region = region_of(args[0], ctx, USAGE)
    now = ctx.services.clock()
    options = (
        Option("--at", "a UTC time, e.g. `--at 14:00`", lambda t: parse_at(t, now), greedy=True),
        Option("--dry-run"),
    )
    parsed = parse_options(args[1:], options, USAGE)
    if parsed.words:
        raise UsageError(f"Unknown words after the region: `{' '.join(parsed.words)}`.", USAGE)
    at: datetime | None = parsed.get("at")
    proposal = Proposal("drill", region)
    if parsed.get("dry_run"):
        return dry_run_reply("drill", region, None, await ops.assess(proposal))
    if at is not None:
        window = blocked_by(ctx.services.fleet.gamedays.blocked, at)
        if window is not None:
            raise UsageError(f"{at:%a %Y-%m-%d %H:%M} UTC is in a blocked window: {window}.", USAGE)
    reason = f"game-day drill at {at:%Y-%m-%d %H:%M} UTC" if at else "game-day drill"
    proposed = await ops.propose(proposal, reason, ctx.invocation.user_id, at=at)
    if proposed.operation is None:
        return refusal_reply("drill", region, None, proposed.assessment)
    return proposal_reply(proposed.operation.id, "drill", region, None, None, proposed.assessment)


def operation_number(word: str, what: str, usage: str) -> int:
    """``2`` or ``#2``: an operation's number as its messages show it."""
    number = record_id(word)
    if number is None:
        raise UsageError(
            f"`{word[:40]}` is not {what}'s number: use the number its messages show.", usage
        )
    return number


async def report(args: list[str], ctx: Context) -> Reply:
    ops = operations(ctx)
    if len(args) > 1:
        raise UsageError("Name one drill by its number, or none for the latest.", USAGE)
    if not args:
        latest = await ops.drills(limit=1)
        if not latest:
            raise UsageError("No drill has been run yet.", USAGE)
        number = latest[0].id
    else:
        number = operation_number(args[0], "a drill", USAGE)
    record = await ops.drill_record(number)
    if record is None:
        # Drains and drills share one numbering: say what the number is, and which drill is last.
        other = await ops.operation(number)
        latest = await ops.drills(limit=1)
        last = f" The latest drill is #{latest[0].id}." if latest else " No drill has run yet."
        if other is not None:
            raise UsageError(
                f"#{number} is the {other.kind} of {other.origin or other.region}, not a drill "
                f"(drains and drills share one numbering).{last}",
                USAGE,
            )
        raise UsageError(
            f"There is no drill #{number}.{last} `/failover drills` lists them.", USAGE
        )
    targets = ctx.services.fleet.targets
    return drill_report_reply(record, targets.rto, targets.rejoin)


async def list_drills(args: list[str], ctx: Context) -> Reply:
    return drills_reply(await operations(ctx).drills())


DRILL = Command(
    "drill",
    USAGE,
    "A game-day failover of one region: preflight, disable, measure the RTO as users see it, hold, "
    "restore, measure the rejoin, report against the targets. Operators only.",
    drill,
)
DRILLS = Command("drills", "drills", "Past and running drills with their outcomes.", list_drills)
