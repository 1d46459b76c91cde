"""``/failover drain``, ``restore``, ``drains``: take a region out of rotation safely."""

from __future__ import annotations

from bot.durations import format_duration, parse_duration
from bot.errors import UsageError
from bot.operations.state import FINISHED
from bot.operations.workflow import Operations
from bot.safety import Proposal, Rule
from bot.views.errors import usage_error
from bot.views.operations import (
    cancel_reply,
    drains_reply,
    dry_run_reply,
    extend_reply,
    noop_reply,
    proposal_reply,
    refusal_reply,
    restore_preview_reply,
    restore_reply,
)
from bot.views.reply import Reply
from commands.base import Command, Context
from commands.parsing import Option, parse_options, record_id
from commands.silences import region_of

DRAIN_USAGE = (
    "drain <region> [--for 2h] [--origin NAME] [--dry-run] [--break-glass RULE] <reason>"
    " | drain extend <region|id> <duration> | drain cancel <region|id>"
)
RESTORE_USAGE = "restore <region|id> [--dry-run]"


def _rule(word: str) -> Rule:
    try:
        return Rule(word)
    except ValueError:
        rules = ", ".join(f"`{r}`" for r in Rule)
        raise ValueError(f"`--break-glass` names the rule to override: one of {rules}.") from None


DRAIN_OPTIONS = (
    Option("--for", "a duration, e.g. `--for 2h`", parse_duration),
    Option("--origin", "an origin name"),
    Option("--dry-run"),
    Option("--break-glass", "the rule to override", _rule, many=True),
)


def operations(ctx: Context) -> Operations:
    ops = ctx.services.operations
    if ops is None:
        raise UsageError("Drains and drills need the database and Cloudflare; neither is set up.")
    return ops


async def require_operator(ctx: Context) -> Reply | None:
    access = ctx.services.access
    if access is not None and await access.is_operator(ctx.invocation.user_id):
        return None
    if access is None:
        return usage_error("Only operators may change traffic; no operators are configured.")
    # the roster is the bot's own mentions from [access], so it stays markup
    return usage_error(
        "Only operators may change traffic.", roster=f"Operators: {access.who('operator')}."
    )


async def drain_named(word: str, ctx: Context, usage: str) -> tuple[str, int | None]:
    """A region, or a drain by the number its messages show (``3`` or ``#3``): its region, and
    its number when named so (None: named by region)."""
    number = record_id(word)
    if number is None:
        return region_of(word, ctx, usage), None
    op = await operations(ctx).operation(number)
    if op is None or op.kind != "drain":
        # Drains and drills share one numbering: say what the number is.
        what = f"the {op.kind} of {op.region}, not a drain" if op else "no drain"
        raise UsageError(f"#{number} is {what}. `/failover drains` lists the drains.", usage)
    if op.state in FINISHED:
        raise UsageError(
            f"Drain #{number} of {op.origin or op.region} has ended "
            f"({op.state.replace('_', ' ')}). `/failover drains` lists those in force.",
            usage,
        )
    return op.region, number


async def drain(args: list[str], ctx: Context) -> Reply:
    if not args:
        raise UsageError("Say which region to drain and why.", DRAIN_USAGE)
    if (denied := await require_operator(ctx)) is not None:
        return denied
    if args[0].lower() in ("extend", "cancel"):
        return await _manage(args, ctx)
    region = region_of(args[0], ctx, DRAIN_USAGE)
    limits = ctx.services.fleet.operations
    parsed = parse_options(args[1:], DRAIN_OPTIONS, DRAIN_USAGE)
    length: float = parsed.get("for", limits.drain_default)
    origin: str | None = parsed.get("origin")
    names = [o.name for o in ctx.services.fleet.regions[region].origins]
    if origin is not None and origin not in names:
        raise UsageError(
            f"{region} has no origin `{origin}` (it has: {', '.join(names)}).", DRAIN_USAGE
        )
    if length <= 0 or length > limits.drain_max:
        raise UsageError(
            f"A drain lasts up to {format_duration(limits.drain_max)} "
            f"(got {format_duration(length)}).",
            DRAIN_USAGE,
        )
    breaking = set(parsed.get("break_glass", []))
    proposal = Proposal("drain", region, origin)
    if parsed.get("dry_run"):
        a = await operations(ctx).assess(proposal, breaking)
        return dry_run_reply("drain", region, origin, a)
    if not parsed.words:
        raise UsageError(
            "Every drain needs a reason, e.g. `/failover drain eu-west --for 1h db upgrade`.",
            DRAIN_USAGE,
        )
    reason = " ".join(parsed.words)
    user = ctx.invocation.user_id
    proposed = await operations(ctx).propose(proposal, reason, user, breaking, length=length)
    a = proposed.assessment
    if a.noop:
        return noop_reply(a.noop)
    if proposed.operation is None:
        return refusal_reply("drain", region, origin, a)
    return proposal_reply(proposed.operation.id, "drain", region, origin, length, a)


async def _manage(args: list[str], ctx: Context) -> Reply:
    ops = operations(ctx)
    verb, user = args[0].lower(), ctx.invocation.user_id
    if len(args) < 2:
        raise UsageError(f"`drain {verb}` needs a region or a drain's number.", DRAIN_USAGE)
    region, named = await drain_named(args[1], ctx, DRAIN_USAGE)
    # The drain current as the command is read is the one it acts on, and no other: one
    # confirmed by the time it writes was not what its sender saw.
    asked = named if named is not None else await ops.drain_of(region)
    if verb == "cancel":
        c = await ops.cancel(asked, user)
        return cancel_reply(c.outcome, c.op, c.was, f"drain of {region}")
    if len(args) != 3:
        raise UsageError(
            "`drain extend` needs a region and a duration, e.g. `drain extend eu-west 1h`.",
            DRAIN_USAGE,
        )
    try:
        length = parse_duration(args[2])
    except ValueError as exc:
        raise UsageError(str(exc), DRAIN_USAGE) from None
    e = await ops.extend(region, length, user, asked)
    return extend_reply(e.op, e.until, e.capped, region)


async def restore(args: list[str], ctx: Context) -> Reply:
    parsed = parse_options(args, (Option("--dry-run"),), RESTORE_USAGE)
    if len(parsed.words) != 1:
        raise UsageError("Name one region, or one drain by its number, to restore.", RESTORE_USAGE)
    region, named = await drain_named(parsed.words[0], ctx, RESTORE_USAGE)
    if parsed.get("dry_run"):
        rows, wait = await operations(ctx).restore_preview(region)
        return restore_preview_reply(region, rows, wait)
    # the drain it acts on, as in `_manage`
    asked = named if named is not None else await operations(ctx).drain_of(region)
    if (denied := await require_operator(ctx)) is not None:
        return denied
    outcome, op = await operations(ctx).restore(region, ctx.invocation.user_id, asked)
    return restore_reply(outcome, region, op)


async def list_drains(args: list[str], ctx: Context) -> Reply:
    drains = await operations(ctx).drains()
    return drains_reply(drains, f"now {ctx.services.clock():%H:%M} UTC")


DRAIN = Command(
    "drain",
    DRAIN_USAGE,
    "Take a region (or one origin) out of rotation after showing the blast radius and a confirm "
    "dialog; it restores itself at the expiry. Operators only; the fallback pool needs an "
    "approver.",
    drain,
)
RESTORE = Command(
    "restore", RESTORE_USAGE, "Put a drained region back and report when it serves again.", restore
)
DRAINS = Command(
    "drains", "drains", "Drains in force or pending, with owner, reason and expiry.", list_drains
)
