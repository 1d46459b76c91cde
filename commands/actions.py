"""The buttons on alert messages: silence a region for an hour, show an incident's timeline."""

from datetime import timedelta

from bot.errors import UsageError
from bot.views.alerts import SILENCE_ACTION, TIMELINE_ACTION
from bot.views.reply import Reply
from commands.base import Context
from commands.incidents import timeline
from commands.silences import region_of, silence_region


async def run_action(action_id: str, value: str, ctx: Context) -> Reply:
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
