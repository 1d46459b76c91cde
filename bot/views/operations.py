"""Drains and drills: the blast radius, the confirm buttons, the channel's operation message."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime

from slack_sdk.models.blocks import ActionsBlock, Block, ButtonElement, ConfirmObject, HeaderBlock

from bot.durations import format_duration
from bot.operations.state import FINISHED as FINISHED_STATES
from bot.operations.state import Cancelled, OpState, Restore
from bot.reads import DrillRecord, OperationView
from bot.safety import Assessment, BlastRow
from bot.views.actions import Action
from bot.views.reply import Reply, context, section
from bot.views.text import escape, mention, with_actor


def blast_lines(rows: Sequence[BlastRow]) -> str:
    moved: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    stay: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        if r.moves:
            moved[(r.now, r.after, r.after_users)].append(r.geo)
        else:
            stay[r.now].append(r.geo)
    # pool names may be the account's own (a pool failover.toml does not know): escaped
    lines = [
        f"• {escape(' '.join(geos))}: {escape(now)} → *{escape(after)}*"
        + (f" :warning: *no healthy pool: {escape(users)}*" if users else "")
        for (now, after, users), geos in moved.items()
    ]
    lines += [
        f"• {escape(' '.join(geos))}: stay on {escape(region)}" for region, geos in stay.items()
    ]
    return "*Blast radius* (geo regions: serving now → after)\n" + "\n".join(lines)


def what(kind: str, region: str, origin: str | None) -> str:
    target = f"origin {origin} of {region}" if origin else region
    return f"{kind} {target}"


def refusal_reply(kind: str, region: str, origin: str | None, a: Assessment) -> Reply:
    reasons = "\n".join(f"• `{escape(r.rule)}`: {escape(r.text)}" for r in a.refusals)
    doing = escape(what(kind, region, origin))
    blocks: list[Block] = [
        section(f":no_entry: Refused to {doing}:\n{reasons}"),
        section(blast_lines(a.blast)),
        context(escape(_after_refusal(a))),
    ]
    return Reply(
        text=f"Refused to {doing}: " + "; ".join(escape(r.text) for r in a.refusals),
        blocks=blocks,
        outcome="rejected",
    )


def _after_refusal(a: Assessment) -> str:
    """What to do about a refusal: when only settling stands in the way, when to retry (breaking
    glass for a wait of seconds would be the wrong lesson); otherwise the break-glass option."""
    waits = [r.retry_after for r in a.refusals]
    if waits and all(w is not None for w in waits):
        return f"Only time stands in the way: retry after {max(w or 0 for w in waits)} s."
    return (
        "If you must, `--break-glass <rule>` overrides a named rule; it is recorded and "
        "announced in the channel."
    )


def dry_run_reply(kind: str, region: str, origin: str | None, a: Assessment) -> Reply:
    if a.noop:
        verdict = escape(a.noop)
    elif a.refusals:
        verdict = "It would be refused: " + "; ".join(
            f"`{escape(r.rule)}` {escape(r.text)}" for r in a.refusals
        )
    else:
        verdict = "It would be allowed" + (
            ", with an approver's approval." if a.needs_approval else "."
        )
    blocks: list[Block] = [
        section(f":mag: Dry run: {escape(what(kind, region, origin))}. {verdict}"),
        section(blast_lines(a.blast)),
    ]
    return Reply(text=f"Dry run: {verdict}", blocks=blocks)


def proposal_reply(
    op_id: int, kind: str, region: str, origin: str | None, length: float | None, a: Assessment
) -> Reply:
    label = f"{kind.capitalize()} {origin or region}" + (
        f" for {format_duration(length)}" if length else ""
    )
    warn = ""
    if a.overridden:
        warn = "\n:rotating_light: *Break-glass*: overriding " + "; ".join(
            f"`{escape(r.rule)}` ({escape(r.text)})" for r in a.overridden
        )
    approval = (
        "\nThe fallback pool: an approver must approve after you confirm."
        if a.needs_approval
        else ""
    )
    blocks: list[Block] = [
        section(f"Ready to {escape(what(kind, region, origin))} (#{op_id}).{approval}{warn}"),
        section(blast_lines(a.blast)),
        *report_hint(kind, op_id),
        ActionsBlock(
            block_id=f"operation-{op_id}",
            elements=[
                ButtonElement(
                    text=label,
                    action_id=Action.CONFIRM,
                    value=str(op_id),
                    style="danger",
                    confirm=ConfirmObject(
                        title=f"{kind.capitalize()} {region}?",
                        # mrkdwn, as slack_sdk makes a confirm dialog's text
                        text=f"This moves live traffic: {escape(what(kind, region, origin))}.",
                        confirm="Yes, go",
                        deny="No",
                    ),
                ),
                ButtonElement(text="Cancel", action_id=Action.CANCEL, value=str(op_id)),
            ],
        ),
    ]
    return Reply(text=f"Confirm: {escape(what(kind, region, origin))}", blocks=blocks)


def report_hint(kind: str, op_id: int) -> list[Block]:
    """Drains and drills share one numbering: a drill says which number its report has, so
    that nobody asks for the report of the drain before it."""
    if kind != "drill":
        return []
    return [context(f"Drill #{op_id}: `/failover drill report {op_id}` once it has run.")]


def approval_blocks(op: OperationView, requester: str) -> list[Block]:
    return [
        section(
            f":raising_hand: {mention(requester)} asks to "
            f"{escape(what(op.kind, op.region, op.origin))} (the fallback pool): "
            f"{escape(op.reason)}. An approver other than the requester must approve."
        ),
        ActionsBlock(
            block_id=f"approve-{op.id}",
            elements=[
                ButtonElement(
                    text="Approve",
                    action_id=Action.APPROVE,
                    value=str(op.id),
                    style="primary",
                    confirm=ConfirmObject(
                        title="Approve?",
                        text="This moves live traffic.",
                        confirm="Approve",
                        deny="No",
                    ),
                )
            ],
        ),
    ]


STATE_EMOJI: dict[str, str] = {
    OpState.AWAITING_CONFIRMATION: "⏸️",
    OpState.AWAITING_APPROVAL: "🙋",
    OpState.SCHEDULED: "📅",
    OpState.APPLYING: "⏳",
    OpState.ACTIVE: "🔧",
    OpState.RESTORING: "↩️",
    OpState.REJOINING: "🔁",
    OpState.RESTORED: "✅",
    OpState.STARTING: "⏳",
    OpState.SAVING: "💾",
    OpState.DISABLING: "⏳",
    OpState.MEASURING_RTO: "⏱️",
    OpState.HOLDING: "🔧",
    OpState.MEASURING_REJOIN: "⏱️",
    OpState.SUCCEEDED: "✅",
    OpState.FAILED: "❌",
    OpState.ABORTED: "🛑",
    OpState.INTERRUPTED: "⚠️",
    OpState.BLOCKED: "⛔",
    OpState.CANCELLED: "✖️",
}


def operation_text(op: OperationView) -> str:
    return f"{op.kind.capitalize()} #{op.id} of {op.origin or op.region}: {op.state}"


def operation_blocks(op: OperationView) -> list[Block]:
    emoji = STATE_EMOJI.get(op.state, "🔧")
    blocks: list[Block] = [HeaderBlock(text=f"{emoji} {operation_text(op)}"[:150])]
    if op.break_glass:
        blocks.append(
            section(
                ":rotating_light: *BREAK-GLASS*: rules overridden: "
                + escape(", ".join(op.break_glass))
            )
        )
    facts = [
        f"by {mention(op.requested_by)}"
        + (f", approved by {mention(op.approved_by)}" if op.approved_by else ""),
        f"reason: {escape(op.reason)}",  # typed by the requester: never markup
    ]
    if op.applied_at:
        facts.append(f"since {op.applied_at:%H:%M:%S} UTC")
    if op.expires_at and op.state == OpState.ACTIVE:
        facts.append(f"restores itself at {op.expires_at:%H:%M:%S} UTC")
    if op.kind == "drill":
        facts.append(f"report: `/failover drill report {op.id}`")
    blocks.append(section(" · ".join(facts)))
    if op.blast:
        blocks.append(section(blast_lines(op.blast)))
    return blocks


def drains_reply(ops: Sequence[OperationView], now_text: str) -> Reply:
    if not ops:
        return Reply(text="No drains.", blocks=[section("No region is drained.")])
    lines = []
    for op in ops:
        left = ""
        if op.expires_at and op.applied_at:
            left = f", restores itself at {op.expires_at:%H:%M:%S} UTC"
        lines.append(
            f"• #{op.id} *{escape(op.origin or op.region)}* {op.state} by "
            f"{mention(op.requested_by)}: "
            f"{escape(op.reason)}{left}"
        )
    return Reply(
        text=f"{len(ops)} drains",
        blocks=[section("*Drains*\n" + "\n".join(lines)), context(escape(now_text))],
    )


def _said(text: str, emoji: str = "") -> Reply:
    """A one-line answer; its words are plain text (names, states), never markup, except the
    backticks around a command."""
    text = escape(text)
    return Reply(text=text, blocks=[section(f"{emoji} {text}".strip())])


def cancel_reply(outcome: Cancelled, op: OperationView | None, was: str, asked: str) -> Reply:
    """The one cancel's answer; ``asked`` names what was asked for ("drill", "drain of eu-west")."""
    if op is None:
        return _said(f"There is no {asked} to cancel.")
    name = f"{op.kind} #{op.id} of {op.origin or op.region}"
    if outcome is Cancelled.CANCELLED:
        pending = "scheduled" if was == OpState.SCHEDULED else "pending"
        return _said(f"The {pending} {name} is cancelled; nothing had changed.")
    if outcome is Cancelled.STOPPING:
        return _said(f"Cancelling {name}: it restores the pool and reports.")
    if op.kind == "drain" and op.state not in FINISHED_STATES:
        return _said(
            f"The {name} is {op.state.replace('_', ' ')}: use `/failover restore {op.region}`."
        )
    return _said(f"The {name} is {op.state.replace('_', ' ')}: nothing to cancel.")


def restore_reply(outcome: Restore, region: str, op: OperationView | None) -> Reply:
    name = f"drain #{op.id} of {region}" if op else f"drain of {region}"  # the one acted on
    text = {
        Restore.NOT_DRAINED: f"{region} is not drained: nothing to restore.",
        Restore.CANCELLED: f"The pending {name} is cancelled; nothing had changed.",
        Restore.ALREADY: f"The {name} is already being restored.",
    }.get(
        outcome,
        f"Restoring {region}, ending the {name}; its thread will say when it serves its regions "
        "again.",
    )
    return _said(text, ":leftwards_arrow_with_hook:" if outcome is Restore.RESTORING else "")


def extend_reply(
    op: OperationView | None, until: datetime | None, capped: bool, region: str
) -> Reply:
    if op is None:
        return _said(f"{region} has no active drain to extend.")
    if until is None:
        return _said(
            f"The drain #{op.id} of {region} is {op.state.replace('_', ' ')}, not in force: "
            "nothing to extend."
        )
    cap = " (the maximum)" if capped else ""
    return _said(
        f"The drain #{op.id} of {region} now restores itself at {until:%H:%M:%S} UTC{cap}."
    )


def confirmed_reply(op: OperationView, user: str) -> Reply:
    """What the requester's confirm button says, by where the operation went."""
    if op.state == OpState.AWAITING_APPROVAL:
        return Reply(
            text=(
                f"{mention(user)} asks an approver to approve: "
                f"{op.kind} #{op.id} of {escape(op.region)}"
            ),
            blocks=approval_blocks(op, user),
            public=True,
        )
    if op.state == OpState.SCHEDULED and op.at is not None:
        return _said(
            f"The {op.kind} #{op.id} of {op.region} is scheduled for {op.at:%Y-%m-%d %H:%M} UTC.",
            ":calendar:",
        )
    if op.kind == "drill":
        return _said(
            f"Drill #{op.id} of {op.region} starting: the channel follows it.",
            ":hourglass_flowing_sand:",
        )
    return _said(
        f"Draining {op.origin or op.region} (#{op.id}): the channel will show it.",
        ":hourglass_flowing_sand:",
    )


def approved_reply(op: OperationView, user: str) -> Reply:
    return Reply(
        text=f"Approved: {op.kind} #{op.id} of {escape(op.region)}.",
        blocks=[
            section(
                f":white_check_mark: Approved by {mention(user)}: "
                f"{op.kind} #{op.id} of {escape(op.region)}."
            )
        ],
        public=True,
    )


def _figure(found: Mapping[str, float | None] | None) -> str:
    if not found:
        return "—"
    return ", ".join(f"{k} {'—' if v is None else f'{v:.1f} s'}" for k, v in found.items())


def drill_report_reply(record: DrillRecord, rto_target: float, rejoin_target: float) -> Reply:
    op = record.drill
    # the journal quotes relays' and Cloudflare's errors and the requester's reason
    lines = [f"`{e.at:%H:%M:%S}` {with_actor(escape(e.text))}" for e in record.journal]
    history = [
        escape(f"#{o.id} {o.state}: RTO {_figure(o.rto)}, rejoin {_figure(o.rejoin)}")
        for o in record.earlier
    ]
    blocks: list[Block] = [
        section(f"*Drill #{op.id} of {escape(op.region)}: {op.state.upper()}*"),
        section(  # vantage names are relays' (config), but "<" is markup to Slack
            escape(
                f"RTO {_figure(op.rto)} (target < {rto_target:g} s) · "
                f"rejoin {_figure(op.rejoin)} (target < {rejoin_target:g} s)"
            )
        ),
        section("*Journal*\n" + "\n".join(lines)[:2900]),
        context("Earlier drills of this region: " + ("; ".join(history) if history else "none")),
    ]
    return Reply(text=f"Drill #{op.id}: {op.state}", blocks=blocks)


def drills_reply(ops: Sequence[OperationView]) -> Reply:
    if not ops:
        return Reply(
            text="No drills yet.",
            blocks=[section(escape("No drills yet. `/failover drill <region>` runs one."))],
        )
    lines = [
        f"• #{o.id} *{escape(o.region)}* scheduled for {o.at:%Y-%m-%d %H:%M} UTC "
        f"({escape(o.reason)})"
        if o.state == OpState.SCHEDULED and o.at is not None
        else (
            f"• #{o.id} *{escape(o.region)}* {o.state} · "
            + (f"{o.created_at:%Y-%m-%d %H:%M} UTC · " if o.created_at else "")
            + f"RTO {escape(_figure(o.rto))}"
        )
        for o in ops
    ]
    return Reply(
        text=f"{len(ops)} drills", blocks=[section("*Drills* (newest first)\n" + "\n".join(lines))]
    )


def noop_reply(text: str) -> Reply:
    text = escape(text)
    return Reply(text=text, blocks=[section(f":information_source: {text}")])


def restore_preview_reply(region: str, rows: Sequence[BlastRow], wait: float | None) -> Reply:
    moves = any(r.moves for r in rows)
    when = ""
    if wait is not None:
        when = f" Once Cloudflare has checked it (within about {format_duration(wait)}):"
    text = escape(f"Dry run: restore {region}." + (when if moves else " Nothing would move."))
    return Reply(text=text, blocks=[section(f":mag: {text}"), section(blast_lines(rows))])
