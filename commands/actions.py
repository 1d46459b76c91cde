"""The buttons: confirm, approve or cancel an operation; silence a region; show a timeline."""

from datetime import timedelta

from bot.errors import UsageError
from bot.views.actions import Action
from bot.views.errors import usage_error
from bot.views.operations import approved_reply, cancel_reply, confirmed_reply
from bot.views.reply import Reply
from commands.base import Context
from commands.incidents import timeline
from commands.silences import region_of, silence_region


async def operation_action(action_id: str, value: str, ctx: Context) -> Reply:
    """Confirm, approve or cancel an operation: authorization is checked again on every button."""
    ops = ctx.services.operations
    access = ctx.services.access
    user = ctx.invocation.user_id
    if ops is None or access is None or not value.isdigit():
        raise UsageError("This button is not for a known operation.")
    # Who may press it: operators confirm and cancel, approvers approve.
    role, check = {
        Action.CONFIRM: ("operator", access.is_operator),
        Action.CANCEL: ("operator", access.is_operator),
        Action.APPROVE: ("approver", access.is_approver),
    }[Action(action_id)]
    if not await check(user):
        verb = {Action.CONFIRM: "confirm changes", Action.CANCEL: "cancel changes"}.get(
            Action(action_id), "approve"
        )
        return usage_error(f"Only {role}s may {verb}. {role.capitalize()}s: {access.who(role)}.")
    # A refusal (too late, not the requester, things changed) is said by the router.
    if action_id == Action.CONFIRM:
        return confirmed_reply(await ops.confirm(int(value), user), user)
    if action_id == Action.APPROVE:
        return approved_reply(await ops.approve(int(value), user), user)
    c = await ops.cancel(int(value), user)
    return cancel_reply(c.outcome, c.op, c.was, "operation")


async def run_action(action_id: str, value: str, ctx: Context) -> Reply:
    if action_id in (Action.CONFIRM, Action.APPROVE, Action.CANCEL):
        return await operation_action(action_id, value, ctx)
    if action_id.startswith(Action.SILENCE):
        region = region_of(value, ctx, "the Silence button")
        return await silence_region(
            ctx, region, timedelta(hours=1), "silenced from the alert's button"
        )
    if action_id == Action.TIMELINE:
        return await timeline([value], ctx)
    raise UsageError(
        f"This button ({action_id}) is not one the bot knows; it may be from an older version."
    )
