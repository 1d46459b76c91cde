"""``/failover drain``, ``restore``, ``drains``: take a region out of rotation safely."""

from __future__ import annotations

from dataclasses import replace

from bot.drains import Drains, OperationRefused, view_of
from bot.durations import format_duration, parse_duration
from bot.errors import UsageError
from bot.safety import Proposal, Rule, blast_radius
from bot.views.errors import usage_error
from bot.views.operations import (
    blast_lines,
    drains_reply,
    dry_run_reply,
    proposal_reply,
    refusal_reply,
)
from bot.views.reply import Reply, section
from commands.base import Command, Context
from commands.silences import region_of

DRAIN_USAGE = (
    "drain <region> [--for 2h] [--origin NAME] [--dry-run] [--break-glass RULE] <reason>"
    " | drain extend <region> <duration> | drain cancel <region>"
)
RESTORE_USAGE = "restore <region> [--dry-run]"


async def _restore_preview(region: str, ctx: Context) -> Reply:
    """What re-enabling ``region`` would move back, without doing it."""
    lb = ctx.services.loadbalancer
    if lb is None:
        raise UsageError("Cloudflare is not configured: nothing to preview.")
    view = await lb.live_view(ctx.services.fleet.load_balancer.hostname)
    pool = view.pool_by_name(ctx.services.fleet.regions[region].pool)
    if pool is None:
        raise UsageError(f"The pool of {region} is not in the account.")
    origins = tuple(replace(o, enabled=True) for o in pool.origins)
    # A re-enabled pool gets no traffic until Cloudflare's first check of it; this is after it,
    # with the origins as Cloudflare last saw them (a failed one is still counted failed).
    up = sum(1 for o in origins if o.healthy is not False)
    enabled = replace(pool, enabled=True, origins=origins, healthy=up >= pool.minimum_origins)
    rows = blast_radius(ctx.services.fleet, view, {**view.pools, pool.id: enabled})
    moves = any(r.moves for r in rows)
    when = ""
    if view.monitor is not None:
        wait = view.monitor.interval + ctx.services.fleet.load_balancer.propagation
        when = f" Once Cloudflare has checked it (within about {format_duration(wait)}):"
    text = f"Dry run: restore {region}." + (when if moves else " Nothing would move.")
    return Reply(text=text, blocks=[section(f":mag: {text}"), section(blast_lines(rows))])


async def require_operator(ctx: Context) -> Reply | None:
    access = ctx.services.access
    if access is not None and await access.is_operator(ctx.invocation.user_id):
        return None
    who = access.who("operator") if access is not None else "no operators are configured"
    return usage_error(f"Only operators may change traffic. Operators: {who}.")


def _drains(ctx: Context) -> Drains:
    drains = ctx.services.drains
    if drains is None:
        raise UsageError("Drains need the database and Cloudflare; neither is set up here.")
    return drains


async def drain(args: list[str], ctx: Context) -> Reply:
    if not args:
        raise UsageError("Say which region to drain and why.", DRAIN_USAGE)
    if (denied := await require_operator(ctx)) is not None:
        return denied
    drains = _drains(ctx)
    user = ctx.invocation.user_id
    if args[0].lower() in ("extend", "cancel"):
        return await _manage(args, ctx)
    region = region_of(args[0], ctx, DRAIN_USAGE)
    ops = ctx.services.fleet.operations
    length, origin, dry_run = ops.drain_default, None, False
    breaking: set[Rule] = set()
    words, rest = args[1:], []
    while words:
        word = words.pop(0)
        if word == "--for":
            if not words:
                raise UsageError("`--for` needs a duration, e.g. `--for 2h`.", DRAIN_USAGE)
            try:
                length = parse_duration(words.pop(0))
            except ValueError as exc:
                raise UsageError(str(exc), DRAIN_USAGE) from None
        elif word == "--origin":
            if not words:
                raise UsageError("`--origin` needs an origin name.", DRAIN_USAGE)
            origin = words.pop(0)
            names = [o.name for o in ctx.services.fleet.regions[region].origins]
            if origin not in names:
                raise UsageError(
                    f"{region} has no origin `{origin}` (it has: {', '.join(names)}).", DRAIN_USAGE
                )
        elif word == "--dry-run":
            dry_run = True
        elif word == "--break-glass":
            rules = ", ".join(f"`{r}`" for r in Rule)
            if not words or words[0] not in {str(r) for r in Rule}:
                raise UsageError(
                    f"`--break-glass` names the rule to override: one of {rules}.", DRAIN_USAGE
                )
            breaking.add(Rule(words.pop(0)))
        elif word.startswith("--"):
            raise UsageError(f"Unknown option `{word}`.", DRAIN_USAGE)
        else:
            rest.append(word)
    if length <= 0 or length > ops.drain_max:
        raise UsageError(
            f"A drain lasts up to {format_duration(ops.drain_max)} "
            f"(got {format_duration(length)}).",
            DRAIN_USAGE,
        )
    proposal = Proposal("drain", region, origin)
    if dry_run:
        return dry_run_reply("drain", region, origin, await drains.assess(proposal, breaking))
    if not rest:
        raise UsageError(
            "Every drain needs a reason, e.g. `/failover drain eu-west --for 1h db upgrade`.",
            DRAIN_USAGE,
        )
    proposed = await drains.propose(proposal, " ".join(rest), length, user, breaking)
    a = proposed.assessment
    if a.noop:
        return Reply(text=a.noop, blocks=[section(f":information_source: {a.noop}")])
    if proposed.operation is None:
        return refusal_reply("drain", region, origin, a)
    return proposal_reply(proposed.operation.id, "drain", region, origin, length, a)


async def _manage(args: list[str], ctx: Context) -> Reply:
    drains = _drains(ctx)
    verb, user = args[0].lower(), ctx.invocation.user_id
    if len(args) < 2:
        raise UsageError(f"`drain {verb}` needs a region.", DRAIN_USAGE)
    region = region_of(args[1], ctx, DRAIN_USAGE)
    if verb == "cancel":
        text = await drains.cancel(region, user)
    else:
        if len(args) != 3:
            raise UsageError(
                "`drain extend` needs a region and a duration, e.g. `drain extend eu-west 1h`.",
                DRAIN_USAGE,
            )
        try:
            length = parse_duration(args[2])
        except ValueError as exc:
            raise UsageError(str(exc), DRAIN_USAGE) from None
        text = await drains.extend(region, length, user)
    return Reply(text=text, blocks=[section(text)])


async def restore(args: list[str], ctx: Context) -> Reply:
    dry_run = "--dry-run" in [a.lower() for a in args]
    args = [a for a in args if a.lower() != "--dry-run"]
    if len(args) != 1:
        raise UsageError("Name one region to restore.", RESTORE_USAGE)
    if dry_run:
        return await _restore_preview(region_of(args[0], ctx, RESTORE_USAGE), ctx)
    if (denied := await require_operator(ctx)) is not None:
        return denied
    region = region_of(args[0], ctx, RESTORE_USAGE)
    try:
        text = await _drains(ctx).restore(region, ctx.invocation.user_id)
    except OperationRefused as exc:
        return usage_error(str(exc))
    return Reply(text=text, blocks=[section(f":leftwards_arrow_with_hook: {text}")])


async def list_drains(args: list[str], ctx: Context) -> Reply:
    ops = await _drains(ctx).active()
    now = ctx.services.clock()
    return drains_reply([view_of(op) for op in ops], f"now {now:%H:%M} UTC")


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
