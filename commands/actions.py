"""The buttons: confirm, approve or cancel an operation; silence a region; show a timeline."""

from datetime import timedelta

from bot.errors import UsageError
from bot.views.actions import Action
from bot.views.alerts import acknowledged_reply, already_acknowledged_reply
from bot.views.errors import usage_error
from bot.views.operations import approved_reply, cancel_reply, confirmed_reply
from bot.views.reply import Reply
from commands.base import Context
from commands.incidents import timeline
from commands.parsing import record_id
from commands.silences import SILENCE_USAGE, require_operator, silence_region


async def operation_action(action_id: str, value: str, ctx: Context) -> Reply:
    """Confirm, approve or cancel an operation: authorization is checked again on every button."""
    ops = ctx.services.operations
    access = ctx.services.access
    user = ctx.invocation.user_id
    number = record_id(value)  # the bot draws it with the operation's number
    if ops is None or access is None or number is None:
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
        return usage_error(
            f"Only {role}s may {verb}.", roster=f"{role.capitalize()}s: {access.who(role)}."
        )
    # A refusal (too late, not the requester, things changed) is said by the router.
    if action_id == Action.CONFIRM:
        return confirmed_reply(await ops.confirm(number, user), user)
    if action_id == Action.APPROVE:
        return approved_reply(await ops.approve(number, user), user)
    c = await ops.cancel(number, user)
    return cancel_reply(c.outcome, c.op, c.was, "operation")


def _shown(text: str, limit: int = 40) -> str:
    """What a click carried, short enough to quote (backticks dropped: it is shown in code)."""
    text = text.replace("`", "")
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def silence_action(action_id: str, value: str, ctx: Context) -> Reply:
    """The incident message's Silence button: operators only, as on the command, and only as the
    bot draws it: action id ``silence_region:<region>`` and value ``<region>``, the same region of
    failover.toml. Slack hands back the button's own ``action_id`` and ``value`` (block_actions
    payload, https://docs.slack.dev/reference/interaction-payloads/block_actions-payload), but
    a request can carry others, so anything else is refused and nothing changes."""
    if (denied := await require_operator(ctx, "silence alerts")) is not None:
        return denied
    regions = ctx.services.fleet.regions
    usage = f"/failover {SILENCE_USAGE}"
    if value not in regions:
        known = ", ".join(f"`{r}`" for r in regions)
        raise UsageError(
            f"This Silence button names `{_shown(value)}`, which is not a region of "
            f"failover.toml ({known}); nothing was silenced.",
            usage,
        )
    if action_id != f"{Action.SILENCE}:{value}":
        raise UsageError(
            f"This Silence button's action `{_shown(action_id, 60)}` does not match its region "
            f"`{value}` (the bot draws `{Action.SILENCE}:{value}`); nothing was silenced.",
            usage,
        )
    return await silence_region(ctx, value, timedelta(hours=1), "silenced from the alert's button")


async def acknowledge_action(value: str, ctx: Context) -> Reply:
    """The incident message's Acknowledge button: operators only (checked at the click, whoever
    saw the button), and only as the bot draws it: value the incident's number. It records the
    acknowledgement on the incident, which tells PagerDuty and updates the message."""
    if (denied := await require_operator(ctx, "acknowledge pages")) is not None:
        return denied
    number = record_id(value)
    records = ctx.services.records
    if number is None or records is None:
        raise UsageError(
            f"This Acknowledge button carries `{_shown(value)}`, not an incident number; "
            "nothing was acknowledged."
        )
    done = await records.acknowledge(number, ctx.invocation.user_id)
    if done.outcome == "acknowledged":
        return acknowledged_reply(number)
    refusal = {
        "unknown": f"There is no incident #{number}; nothing was acknowledged.",
        "not paged": f"Incident #{number} was never paged; there is nothing to acknowledge.",
        "closed": f"Incident #{number} is over and its page resolved; nothing to acknowledge.",
    }.get(done.outcome)
    if refusal is not None:
        raise UsageError(refusal)
    return already_acknowledged_reply(number, done.by, done.via, done.at)


async def run_action(action_id: str, value: str, ctx: Context) -> Reply:
    if action_id == Action.ACKNOWLEDGE:
        return await acknowledge_action(value, ctx)
    if action_id in (Action.CONFIRM, Action.APPROVE, Action.CANCEL):
        return await operation_action(action_id, value, ctx)
    if action_id.startswith(Action.SILENCE):
        return await silence_action(action_id, value, ctx)
    if action_id == Action.TIMELINE:
        if record_id(value) is None:  # the bot draws it with the incident's number
            raise UsageError(
                f"This Show timeline button carries `{_shown(value)}`, not an incident number; "
                "nothing was shown.",
                "/failover timeline <id>",
            )
        return await timeline([value], ctx)
    raise UsageError(
        f"This button ({action_id}) is not one the bot knows; it may be from an older version."
    )
