"""``/failover drill <region>``, ``drill cancel``, ``drill report <id>``, ``drills``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from bot.db.models import JournalEntry, Operation
from bot.errors import UsageError
from bot.safety import Proposal, blocked_by
from bot.views.operations import dry_run_reply, proposal_reply, refusal_reply
from bot.views.reply import Reply, context, section
from commands.base import Command, Context
from commands.drains import _drains, require_operator
from commands.silences import region_of

USAGE = "drill <region> [--at <UTC time>] [--dry-run] | drill cancel | drill report <id>"
MAX_AHEAD = timedelta(days=30)


def parse_at(words: list[str], now: datetime) -> datetime:
    """``14:00`` (the next one), ``2026-12-01 14:00`` or ``2026-12-01T14:00``, all UTC."""
    text = " ".join(words).strip().upper().removesuffix("UTC").strip().replace("T", " ")
    try:
        if len(text) == 5 and text[2] == ":":
            hour, minute = int(text[:2]), int(text[3:])
            at = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
            at = at if at > now else at + timedelta(days=1)
        else:
            at = datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
    except ValueError:
        raise UsageError(
            f"`{' '.join(words)}` is not a UTC time: use 14:00 or 2026-12-01 14:00.", USAGE
        ) from None
    if at <= now or at - now > MAX_AHEAD:
        raise UsageError(f"{at:%Y-%m-%d %H:%M} UTC must be in the future, within 30 days.", USAGE)
    return at


def _figure(found: object) -> str:
    if not isinstance(found, dict) or not found:
        return "—"
    return ", ".join(f"{k} {'—' if v is None else f'{v:.1f} s'}" for k, v in found.items())


async def drill(args: list[str], ctx: Context) -> Reply:
    if not args:
        raise UsageError("Say which region to drill.", USAGE)
    if args[0].lower() == "report":
        return await report(args[1:], ctx)
    if (denied := await require_operator(ctx)) is not None:
        return denied
    drills = ctx.services.drills
    if args[0].lower() == "cancel":
        if drills is None:
            raise UsageError("No drill can run here: the watch is off (SLACK_CHANNEL is not set).")
        text = await drills.cancel(ctx.invocation.user_id)
        return Reply(text=text, blocks=[section(text)])
    region = region_of(args[0], ctx, USAGE)
    words = args[1:]
    dry_run = "--dry-run" in [w.lower() for w in words]
    words = [w for w in words if w.lower() != "--dry-run"]
    at: datetime | None = None
    if words and words[0] == "--at":
        at = parse_at(words[1:], ctx.services.clock())
        words = []
    if words:
        raise UsageError(f"Unknown words after the region: `{' '.join(words)}`.", USAGE)
    drains = _drains(ctx)
    proposal = Proposal("drill", region)
    if dry_run:
        return dry_run_reply("drill", region, None, await drains.assess(proposal))
    extra: dict[str, object] = {}
    if at is not None:
        window = blocked_by(ctx.services.fleet.gamedays.blocked, at)
        if window is not None:
            raise UsageError(f"{at:%a %Y-%m-%d %H:%M} UTC is in a blocked window: {window}.", USAGE)
        extra["at"] = at.isoformat()
    reason = f"game-day drill at {at:%Y-%m-%d %H:%M} UTC" if at else "game-day drill"
    proposed = await drains.propose(proposal, reason, 0, ctx.invocation.user_id, (), extra)
    if proposed.operation is None:
        return refusal_reply("drill", region, None, proposed.assessment)
    return proposal_reply(proposed.operation.id, "drill", region, None, None, proposed.assessment)


async def report(args: list[str], ctx: Context) -> Reply:
    if len(args) != 1 or not args[0].lstrip("#").isdigit():
        raise UsageError("Name one drill by its number.", USAGE)
    targets = ctx.services.fleet.targets
    async with ctx.services.db()() as session:
        op = await session.get(Operation, int(args[0].lstrip("#")))
        if op is None or op.kind != "drill":
            raise UsageError(f"There is no drill {args[0]}. `/failover drills` lists them.", USAGE)
        entries = list(
            await session.scalars(
                select(JournalEntry)
                .where(JournalEntry.operation_id == op.id)
                .order_by(JournalEntry.at, JournalEntry.id)
            )
        )
        earlier = list(
            await session.scalars(
                select(Operation)
                .where(
                    Operation.kind == "drill", Operation.region == op.region, Operation.id < op.id
                )
                .order_by(Operation.id.desc())
                .limit(5)
            )
        )
    detail = op.detail or {}
    lines = [f"`{e.at:%H:%M:%S}` {e.text}" for e in entries]
    history = [
        f"#{o.id} {o.state}: RTO {_figure((o.detail or {}).get('rto'))}, "
        f"rejoin {_figure((o.detail or {}).get('rejoin'))}"
        for o in earlier
    ]
    blocks = [
        section(f"*Drill #{op.id} of {op.region}: {op.state.upper()}*"),
        section(
            f"RTO {_figure(detail.get('rto'))} (target < {targets.rto:g} s) · "
            f"rejoin {_figure(detail.get('rejoin'))} (target < {targets.rejoin:g} s)"
        ),
        section("*Journal*\n" + "\n".join(lines)[:2900]),
        context("Earlier drills of this region: " + ("; ".join(history) if history else "none")),
    ]
    return Reply(text=f"Drill #{op.id}: {op.state}", blocks=blocks)


async def list_drills(args: list[str], ctx: Context) -> Reply:
    async with ctx.services.db()() as session:
        ops = list(
            await session.scalars(
                select(Operation)
                .where(Operation.kind == "drill")
                .order_by(Operation.id.desc())
                .limit(10)
            )
        )
    if not ops:
        return Reply(
            text="No drills yet.",
            blocks=[section("No drills yet. `/failover drill <region>` runs one.")],
        )
    lines = [
        (
            f"• #{o.id} *{o.region}* scheduled for "
            f"{(o.detail or {})['at'][:16].replace('T', ' ')} UTC ({o.reason})"
        )
        if o.state == "scheduled"
        else (
            f"• #{o.id} *{o.region}* {o.state} · {o.created_at:%Y-%m-%d %H:%M} UTC · "
            f"RTO {_figure((o.detail or {}).get('rto'))}"
        )
        for o in ops
    ]
    return Reply(
        text=f"{len(ops)} drills", blocks=[section("*Drills* (newest first)\n" + "\n".join(lines))]
    )


DRILL = Command(
    "drill",
    USAGE,
    "A game-day failover of one region: preflight, disable, measure the RTO as users see it, hold, "
    "restore, measure the rejoin, report against the targets. Operators only.",
    drill,
)
DRILLS = Command("drills", "drills", "Past and running drills with their outcomes.", list_drills)
