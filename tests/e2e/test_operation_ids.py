"""Drains and drills by the number their messages show; a refusal for settling says when."""

from __future__ import annotations

from bot.sandbox.render import render_message

from ..conftest import eventually
from .conftest import Ops


async def test_every_message_shows_the_number_and_commands_take_it(ops: Ops) -> None:
    shown = await ops.say("drain eu-west --for 1h db upgrade")
    assert "Ready to drain eu-west (#1)." in shown
    await ops.press("Drain eu-west")

    async def active() -> bool:
        return "#1 eu-west active by" in await ops.say("drains")

    await eventually(active, within=10)
    assert any(m.startswith("🔧 Drain #1 of eu-west: active") for m in ops.channel())
    # Drains and drills share one numbering: a drain's number is not a drill's report.
    wrong = await ops.say("drill report 1")
    assert "#1 is the drain of eu-west, not a drill" in wrong and "No drill has run yet" in wrong
    extended = await ops.say("drain extend 1 30m")
    assert "The drain #1 of eu-west now restores itself at" in extended
    assert "use `/failover restore eu-west`" in await ops.say("drain cancel #1")
    assert "Restoring eu-west, ending the drain #1" in await ops.say("restore 1")
    # Right after the restore, the next change waits for it to settle, and says how long.
    refused = await ops.say("drill eu-west")
    assert "Refused to drill eu-west" in refused and "drain #1 of eu-west" in refused
    assert "retry after" in refused and "Only time stands in the way: retry after" in refused
    assert "--break-glass" not in refused  # a wait of seconds is no reason to break glass

    async def allowed() -> bool:
        return "Ready to drill eu-west (#2)." in await ops.say("drill eu-west")

    await eventually(allowed, within=20, every=1.0)
    assert "Drill #2: `/failover drill report 2` once it has run." in render_message(ops.last)
    await ops.press("Drill eu-west")

    async def finished() -> bool:
        return any(m.startswith("✅ Drill #2 of eu-west: succeeded") for m in ops.channel())

    await eventually(finished, within=30)
    latest = await ops.say("drill report")  # no number: the latest drill
    assert latest.startswith("Drill #2 of eu-west: SUCCEEDED")
    assert "There is no drill #7. The latest drill is #2." in await ops.say("drill report 7")
    ended = await ops.say("restore 1")
    assert "Drain #1 of eu-west has ended (restored)" in ended
    assert "#2 is the drill of eu-west, not a drain" in await ops.say("drain cancel 2")
