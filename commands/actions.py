"""The buttons on alert messages: silence a region for an hour, show an incident's timeline."""

from datetime import timedelta

from bot.drains import OperationRefused, view_of
from bot.errors import UsageError
from bot.views.alerts import SILENCE_ACTION, TIMELINE_ACTION
from bot.views.errors import usage_error
from bot.views.operations import APPROVE_ACTION, CANCEL_ACTION, CONFIRM_ACTION, approval_blocks
from bot.views.reply import Reply, section
from commands.base import Context
from commands.incidents import timeline
from commands.silences import region_of, silence_region


async def operation_action(action_id: str, value: str, ctx: Context) -> Reply:
    """Confirm, approve or cancel a drain: authorization is checked again on every button."""
    drains = ctx.services.drains
    access = ctx.services.access
    user = ctx.invocation.user_id
    if drains is None or access is None or not value.isdigit():
        raise UsageError("This button is not for a known operation.")
    try:
        if action_id == CONFIRM_ACTION:
            if not await access.is_operator(user):
                return usage_error(
                    f"Only operators may confirm changes. Operators: {access.who('operator')}."
                )
            op = await drains.confirm(int(value), user)
            if op.state == "awaiting_approval":
                view = view_of(op)
                return Reply(
                    text=f"<@{user}> asks an approver to approve: {op.kind} of {op.region}",
                    blocks=approval_blocks(view, user),
                    public=True,
                )
            if op.state == "scheduled":
                at = str((op.detail or {}).get("at", ""))[:16].replace("T", " ")
                text = f"The {op.kind} of {op.region} is scheduled for {at} UTC."
                return Reply(text=text, blocks=[section(f":calendar: {text}")])
            if op.kind == "drill":
                text = f"Drill of {op.region} starting: the channel follows it."
                return Reply(text=text, blocks=[section(f":hourglass_flowing_sand: {text}")])
            return Reply(
                text=f"Draining {op.origin or op.region}…",
                blocks=[
                    section(
                        f":hourglass_flowing_sand: Draining {op.origin or op.region}: "
                        "the channel will show it."
                    )
                ],
            )
        if action_id == APPROVE_ACTION:
            if not await access.is_approver(user):
                return usage_error(
                    f"Only approvers may approve. Approvers: {access.who('approver')}."
                )
            op = await drains.approve(int(value), user)
            return Reply(
                text=f"Approved: {op.kind} of {op.region}.",
                blocks=[
                    section(f":white_check_mark: Approved by <@{user}>: {op.kind} of {op.region}.")
                ],
                public=True,
            )
        if action_id == CANCEL_ACTION:
            if not await access.is_operator(user):
                return usage_error(
                    f"Only operators may cancel changes. Operators: {access.who('operator')}."
                )
            text = await drains.cancel_op(int(value), user)
            return Reply(text=text, blocks=[section(text)])
    except OperationRefused as exc:
        return usage_error(str(exc))
    raise UsageError(f"This button ({action_id}) is not one the bot knows.")


async def run_action(action_id: str, value: str, ctx: Context) -> Reply:
    if action_id in (CONFIRM_ACTION, APPROVE_ACTION, CANCEL_ACTION):
        return await operation_action(action_id, value, ctx)
    if action_id.startswith(SILENCE_ACTION):
        region = region_of(value, ctx, "the Silence button")
        return await silence_region(
            ctx, region, timedelta(hours=1), "silenced from the alert's button"
        )
    if action_id == TIMELINE_ACTION:
        return await timeline([value], ctx)
    raise UsageError(
        f"This button ({action_id}) is not one the bot knows; it may be from an older version."
    )
