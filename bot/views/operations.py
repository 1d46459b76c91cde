"""Drains and drills: the blast radius, the confirm buttons, the channel's operation message."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from slack_sdk.models.blocks import ActionsBlock, Block, ButtonElement, ConfirmObject, HeaderBlock

from bot.durations import format_duration
from bot.notifier import OperationView
from bot.safety import Assessment, BlastRow
from bot.views.reply import Reply, context, section

CONFIRM_ACTION = "confirm_operation"
APPROVE_ACTION = "approve_operation"
CANCEL_ACTION = "cancel_operation"


def blast_lines(rows: Sequence[BlastRow]) -> str:
    moved: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    stay: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        if r.moves:
            moved[(r.now, r.after, r.after_users)].append(r.geo)
        else:
            stay[r.now].append(r.geo)
    lines = [
        f"• {' '.join(geos)}: {now} → *{after}*"
        + (f" :warning: *no healthy pool: {users}*" if users else "")
        for (now, after, users), geos in moved.items()
    ]
    lines += [f"• {' '.join(geos)}: stay on {region}" for region, geos in stay.items()]
    return "*Blast radius* (geo regions: serving now → after)\n" + "\n".join(lines)


def what(kind: str, region: str, origin: str | None) -> str:
    target = f"origin {origin} of {region}" if origin else region
    return f"{kind} {target}"


def refusal_reply(kind: str, region: str, origin: str | None, a: Assessment) -> Reply:
    reasons = "\n".join(f"• `{r.rule}`: {r.text}" for r in a.refusals)
    blocks: list[Block] = [
        section(f":no_entry: Refused to {what(kind, region, origin)}:\n{reasons}"),
        section(blast_lines(a.blast)),
        context(
            "If you must, `--break-glass <rule>` overrides a named rule; it is recorded and "
            "announced in the channel."
        ),
    ]
    return Reply(
        text=f"Refused to {what(kind, region, origin)}: " + "; ".join(r.text for r in a.refusals),
        blocks=blocks,
        outcome="rejected",
    )


def dry_run_reply(kind: str, region: str, origin: str | None, a: Assessment) -> Reply:
    if a.noop:
        verdict = a.noop
    elif a.refusals:
        verdict = "It would be refused: " + "; ".join(f"`{r.rule}` {r.text}" for r in a.refusals)
    else:
        verdict = "It would be allowed" + (
            ", with an approver's approval." if a.needs_approval else "."
        )
    blocks: list[Block] = [
        section(f":mag: Dry run: {what(kind, region, origin)}. {verdict}"),
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
            f"`{r.rule}` ({r.text})" for r in a.overridden
        )
    approval = (
        "\nThe fallback pool: an approver must approve after you confirm."
        if a.needs_approval
        else ""
    )
    blocks: list[Block] = [
        section(f"Ready to {what(kind, region, origin)}.{approval}{warn}"),
        section(blast_lines(a.blast)),
        ActionsBlock(
            block_id=f"operation-{op_id}",
            elements=[
                ButtonElement(
                    text=label,
                    action_id=CONFIRM_ACTION,
                    value=str(op_id),
                    style="danger",
                    confirm=ConfirmObject(
                        title=f"{kind.capitalize()} {region}?",
                        text=f"This moves live traffic: {what(kind, region, origin)}.",
                        confirm="Yes, go",
                        deny="No",
                    ),
                ),
                ButtonElement(text="Cancel", action_id=CANCEL_ACTION, value=str(op_id)),
            ],
        ),
    ]
    return Reply(text=f"Confirm: {what(kind, region, origin)}", blocks=blocks)


def approval_blocks(op: OperationView, requester: str) -> list[Block]:
    return [
        section(
            f":raising_hand: <@{requester}> asks to {what(op.kind, op.region, op.origin)} "
            f"(the fallback pool): {op.reason}. An approver other than the requester must approve."
        ),
        ActionsBlock(
            block_id=f"approve-{op.id}",
            elements=[
                ButtonElement(
                    text="Approve",
                    action_id=APPROVE_ACTION,
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


STATE_EMOJI = {"active": "🔧", "restored": "✅", "failed": "❌", "restoring": "↩️", "applying": "⏳"}


def operation_text(op: OperationView) -> str:
    return f"{op.kind.capitalize()} of {op.origin or op.region}: {op.state}"


def operation_blocks(op: OperationView) -> list[Block]:
    emoji = STATE_EMOJI.get(op.state, "🔧")
    blocks: list[Block] = [HeaderBlock(text=f"{emoji} {operation_text(op)}"[:150])]
    if op.break_glass:
        blocks.append(
            section(
                f":rotating_light: *BREAK-GLASS*: rules overridden: {', '.join(op.break_glass)}"
            )
        )
    facts = [
        f"by <@{op.requested_by}>"
        + (f", approved by <@{op.approved_by}>" if op.approved_by else ""),
        f"reason: {op.reason}",
    ]
    if op.applied_at:
        facts.append(f"since {op.applied_at:%H:%M:%S} UTC")
    if op.expires_at and op.state == "active":
        facts.append(f"restores itself at {op.expires_at:%H:%M:%S} UTC")
    blocks.append(section(" · ".join(facts)))
    if op.blast:
        blocks.append(section(blast_lines(op.blast)))
    if op.lines:
        blocks.append(context(" · ".join(op.lines[-4:])))
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
            f"• *{op.origin or op.region}* {op.state} by <@{op.requested_by}>: {op.reason}{left}"
        )
    return Reply(
        text=f"{len(ops)} drains",
        blocks=[section("*Drains*\n" + "\n".join(lines)), context(now_text)],
    )
