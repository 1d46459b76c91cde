"""Who acted is shown as Slack shows a person, `<@U…>`, in operation threads and incident threads;
never a bare user id."""

from __future__ import annotations

from bot.views.text import escape, with_actor

from ..conftest import eventually
from .conftest import Ops


async def test_a_drains_thread_mentions_who_extended_and_restored_it(ops: Ops) -> None:
    await ops.say("drain eu-west --for 1h database upgrade")
    await ops.press("Drain eu-west")

    # The pool goes off before the drain is committed as in force, and a drain not yet in force
    # has nothing to extend (the reply says so): ask until it is.
    async def extended() -> bool:
        return "now restores itself" in await ops.say("drain extend eu-west 2h")

    await eventually(extended, within=5)
    assert not await ops.pool_enabled("eu-west")
    await ops.say("restore eu-west")

    async def restore_told() -> bool:
        return any("restore asked by" in m for m in ops.channel())

    await eventually(restore_told, within=10)
    channel = "\n".join(ops.channel())
    assert "extended by <@U0OPERATOR> until" in channel
    assert "restore asked by <@U0OPERATOR>" in channel
    assert "by U0OPERATOR" not in channel


async def test_an_incident_note_mentions_its_author(ops: Ops) -> None:
    await ops.world.gateways["apac-sg"].set_mode("down")

    async def incident_posted() -> bool:
        return any("apac-sg" in m for m in ops.channel())

    await eventually(incident_posted, within=20)
    shown = await ops.say("note 1 looking at the gateway logs")
    assert "looking at the gateway logs" in shown

    async def noted() -> bool:
        return any("looking at the gateway logs" in m for m in ops.channel())

    await eventually(noted, within=10)
    [note] = [m for m in ops.channel() if "looking at the gateway logs" in m]
    assert "(<@U0OPERATOR>)" in note
    timeline = await ops.say("timeline 1")
    assert "(<@U0OPERATOR>): looking at the gateway logs" in timeline


def test_only_whom_the_bot_named_at_the_start_becomes_a_mention() -> None:
    line = "12:00:00 UTC · proposed by U0OPERATOR: drain as asked by U0SOMEONE"
    assert with_actor(escape(line)) == (
        "12:00:00 UTC · proposed by <@U0OPERATOR>: drain as asked by U0SOMEONE"
    )
    assert with_actor(escape("stopping: cancelled by U0OPERATOR")) == (
        "stopping: cancelled by <@U0OPERATOR>"
    )
    for untouched in (
        "rejoined: served by WEU again",  # a geo region, in the bot's own words
        "<@U0SOMEONE> proposed by U0OPERATOR",  # not the bot's words at the start
        "proposed by schedule: weekly game day",  # not a user id
    ):
        assert with_actor(escape(untouched)) == escape(untouched)
