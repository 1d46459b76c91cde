"""``/failover drill <region>``, ``drill cancel``, ``drill report <id>``, ``drills``."""

from __future__ import annotations

from sqlalchemy import select

from bot.db.models import JournalEntry, Operation
from bot.errors import UsageError
from bot.safety import Proposal
from bot.views.operations import dry_run_reply, proposal_reply, refusal_reply
from bot.views.reply import Reply, context, section
from commands.base import Command, Context
from commands.drains import _drains, require_operator
from commands.silences import region_of

USAGE = "drill <region> [--dry-run] | drill cancel | drill report <id>"


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
    flags = [a.lower() for a in args[1:]]
    if any(f != "--dry-run" for f in flags):
        raise UsageError(f"Unknown words after the region: `{' '.join(args[1:])}`.", USAGE)
    drains = _drains(ctx)
    proposal = Proposal("drill", region)
    if flags:
        return dry_run_reply("drill", region, None, await drains.assess(proposal))
    proposed = await drains.propose(proposal, "game-day drill", 0, ctx.invocation.user_id, ())
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
        f"• #{o.id} *{o.region}* {o.state} · {o.created_at:%Y-%m-%d %H:%M} UTC · "
        f"RTO {_figure((o.detail or {}).get('rto'))}"
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
