"""Drains end to end: Slack commands and buttons in, the load balancer changed, the channel told."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import httpx
from sqlalchemy import select

from bot.db.engine import sessionmaker
from bot.db.models import AuditEntry, Incident, Operation
from bot.sandbox.render import render_message

from ..conftest import eventually
from .conftest import Ops


async def test_drain_confirm_apply_expire_and_rejoin(ops: Ops) -> None:
    shown = await ops.say("drain eu-west --for 6s database upgrade")
    assert "Ready to drain eu-west (#1)." in shown
    assert "WEU EEU ME NAF SAF: eu-west → us-east" in shown
    assert await ops.pool_enabled("eu-west")  # nothing happens before the confirm dialog
    reply = await ops.press("Drain eu-west")
    assert "Draining eu-west" in render_message(reply)

    async def drained() -> bool:
        return not await ops.pool_enabled("eu-west")

    await eventually(drained, within=5)

    async def expired_and_back() -> bool:
        return any("serves WEU EEU ME NAF SAF again" in m for m in ops.channel())

    await eventually(expired_and_back, within=25)
    assert await ops.pool_enabled("eu-west")
    channel = "\n".join(ops.channel())
    assert "Drain #1 of eu-west" in channel and "reason: database upgrade" in channel
    assert "the drain expired: restoring it" in channel
    assert "Cloudflare sends WEU EEU ME NAF SAF to us-east" in channel  # in the drain's thread
    async with sessionmaker(ops.bot.engine)() as session:
        assert (
            await session.scalars(select(Incident))
        ).first() is None  # a drain opens no incident
        op = (await session.scalars(select(Operation))).one()
        assert op.state == "restored" and op.requested_by == "U0OPERATOR"
        audit = [a.text for a in await session.scalars(select(AuditEntry).order_by(AuditEntry.id))]
    assert audit[0] == "drain eu-west --for 6s database upgrade"
    assert any(t.startswith("[button] confirm_operation") for t in audit)


async def test_only_operators_and_checked_again_on_the_button(ops: Ops) -> None:
    shown = await ops.say("drain eu-west --for 1h nope", user="U0STRANGER")
    assert "Only operators may change traffic" in shown
    await ops.say("drain eu-west --for 1h maintenance")
    reply = await ops.press("Drain eu-west", user="U0STRANGER")
    assert "Only operators may confirm changes" in render_message(reply)
    reply = await ops.press("Drain eu-west", user="U0ONCALL")  # an operator through the group
    assert "Only the operator who asked for it may confirm it" in render_message(reply)
    assert await ops.pool_enabled("eu-west")


async def test_the_fallback_pool_needs_another_approver(ops: Ops) -> None:
    await ops.say("drain us-east --for 1h failover test")
    ask = await ops.press("Drain us-east")
    assert ask[
        "response_type"
    ] == "in_channel" and "An approver other than the requester" in render_message(ask)
    denied = await ops.press("Approve", user="U0OPERATOR", message=ask)
    assert "Only approvers may approve" in render_message(denied)
    approved = await ops.press("Approve", user="U0APPROVER", message=ask)
    assert "Approved by <@U0APPROVER>" in render_message(approved)

    async def drained() -> bool:
        return not await ops.pool_enabled("us-east")

    await eventually(drained, within=5)


async def test_refusals_dry_run_noop_extend_cancel(ops: Ops) -> None:
    await ops.world.gateways["apac-sg"].set_mode("down")
    await ops.world.gateways["us-east"].set_mode("down")

    async def cloudflare_noticed() -> bool:
        return (
            sum(1 for p in ops.world.cloudflare.pools if not ops.world.cloudflare.pool_healthy(p))
            == 2
        )

    await eventually(cloudflare_noticed, within=8)
    refused = await ops.say("drain eu-west --for 1h risky")
    assert "Refused to drain eu-west" in refused and "`no-healthy-pool`" in refused
    dry = await ops.say("drain eu-west --dry-run")
    assert "It would be refused" in dry
    await ops.world.gateways["apac-sg"].set_mode("healthy")
    await ops.world.gateways["us-east"].set_mode("healthy")

    async def healthy_again() -> bool:
        return all(ops.world.cloudflare.pool_healthy(p) for p in ops.world.cloudflare.pools)

    await eventually(healthy_again, within=8)
    shown = await ops.say("drain eu-west --for 1h --origin nope x")
    assert "eu-west has no origin `nope`" in shown
    shown = await ops.say("drain eu-west --for 48h too long")
    assert "A drain lasts up to 24h" in shown
    await ops.say("drain eu-west --for 1h planned")
    cancelled = await ops.say("drain cancel eu-west")
    assert "The pending drain #1 of eu-west is cancelled; nothing had changed." in cancelled
    assert (await ops.say("drains")).startswith("No region is drained")


async def test_origin_drain_extend_restore_preview_and_audited_changes(ops: Ops) -> None:
    await ops.say("drain eu-west --origin gateway-eu-west --for 1h swap the box")
    await ops.press("Drain gateway-eu-west")

    async def origin_off() -> bool:
        pool = next(
            p for p in ops.world.cloudflare.pools.values() if p["name"] == "foundation-eu-west"
        )
        return pool["enabled"] and not pool["origins"][0]["enabled"]

    await eventually(origin_off, within=5)

    async def active() -> bool:  # the driver commits the phase right after Cloudflare answers
        async with sessionmaker(ops.bot.engine)() as session:
            return (await session.scalars(select(Operation))).one().state == "active"

    await eventually(active, within=5)
    assert "restores itself at" in await ops.say("drain extend eu-west 30m")
    preview = await ops.say("restore eu-west --dry-run")
    assert (
        "Dry run: restore eu-west." in preview
        and "WEU EEU ME NAF SAF: us-east → eu-west" in preview
    )
    await ops.say("restore eu-west")

    async def origin_on() -> bool:
        pool = next(
            p for p in ops.world.cloudflare.pools.values() if p["name"] == "foundation-eu-west"
        )
        return bool(pool["origins"][0]["enabled"])

    await eventually(origin_on, within=5)
    expected = ["drain #1: disabled gateway-eu-west", "drain #1: enabled gateway-eu-west"]

    async def audited() -> bool:
        # The audit row is committed right after the call the stand-in has already seen.
        async with sessionmaker(ops.bot.engine)() as session:
            rows = await session.scalars(
                select(AuditEntry).where(AuditEntry.kind == "change").order_by(AuditEntry.id)
            )
            return [a.text for a in rows] == expected

    await eventually(audited, within=5)


async def test_break_glass_is_recorded_and_shown_loudly(ops: Ops) -> None:
    await ops.world.gateways["apac-sg"].set_mode("down")
    await ops.world.gateways["us-east"].set_mode("down")

    async def two_unhealthy() -> bool:
        return (
            sum(1 for p in ops.world.cloudflare.pools if not ops.world.cloudflare.pool_healthy(p))
            == 2
        )

    await eventually(two_unhealthy, within=8)
    shown = await ops.say(
        "drain eu-west --for 10m --break-glass no-healthy-pool bad deploy must stop"
    )
    assert "Break-glass" in shown and "`no-healthy-pool`" in shown
    await ops.press("Drain eu-west")

    async def loud() -> bool:
        return any("BREAK-GLASS" in m for m in ops.channel())

    await eventually(loud, within=8)
    async with sessionmaker(ops.bot.engine)() as session:
        op = (await session.scalars(select(Operation))).one()
    assert op.break_glass == ["no-healthy-pool"] and op.reason == "bad deploy must stop"


async def test_app_home_shows_the_dashboard_and_follows_changes(ops: Ops) -> None:
    assert (
        await ops.user.event({"type": "app_home_opened", "user": "U0VIEWER", "tab": "home"}) == 200
    )

    async def published() -> list[dict[str, Any]]:
        return [c.args for c in ops.world.slack.calls if c.method == "views.publish"]

    await eventually(lambda: _nonempty(published()), within=5)
    first = (await published())[0]
    assert first["user_id"] == "U0VIEWER"
    text = str(first["view"])
    assert "Failover dashboard" in text and "us-east" in text and "Open incidents" in text
    await ops.say("drain apac-sg --for 1h patching")
    await ops.press("Drain apac-sg")
    leadership = ops.bot.leadership
    assert leadership is not None
    home = leadership.home

    async def refreshed() -> bool:
        await home.refresh(leadership.notifier)  # the 10 s job, run now
        views = [str(v["view"]) for v in await published()]
        return any("drain #1 of apac-sg" in v for v in views)  # by its number, as elsewhere

    await eventually(refreshed, within=10)


async def _nonempty(items: Awaitable[list[Any]]) -> bool:
    return bool(await items)


async def test_a_double_click_applies_once(ops: Ops) -> None:
    await ops.say("drain eu-west --for 1h twice")
    button = next(
        e
        for b in ops.last["blocks"]
        if b["type"] == "actions"
        for e in b["elements"]
        if "Drain" in e["text"]["text"]
    )
    first, second = await asyncio.gather(
        ops.user.click(button["action_id"], button["value"]),
        ops.user.click(button["action_id"], button["value"]),
    )
    texts = sorted(render_message(x.replies[-1]) for x in (first, second))
    assert sum("Draining eu-west" in t for t in texts) == 1, texts
    assert any("is applying now" in t or "is active now" in t for t in texts), texts


async def test_cloudflare_failing_during_a_drain_keeps_state_and_says_so(ops: Ops) -> None:
    await ops.say("drain eu-west --for 1h while cloudflare struggles")
    async with httpx.AsyncClient() as http:
        faults = f"{ops.world.cloudflare.server.url}/_sandbox/faults"
        # Reads answer (the confirm checks again), changes fail: Cloudflare breaks mid-operation.
        await http.post(faults, json={"kind": "500", "method": "PATCH"})
        await ops.press("Drain eu-west")

        async def told() -> bool:
            return any("Cloudflare: " in m and "trying again" in m for m in ops.channel())

        await eventually(told, within=20)
        async with sessionmaker(ops.bot.engine)() as session:
            op = (await session.scalars(select(Operation))).one()
        assert op.state == "applying"  # nothing half-done: the phase waits for the call
        assert await ops.pool_enabled("eu-west")
        await http.post(faults, json={"kind": "none"})

    async def applied() -> bool:
        return not await ops.pool_enabled("eu-west")

    await eventually(applied, within=40)  # the circuit breaker may hold calls back 30 s


async def test_a_cloudflare_outage_at_the_click_is_said_plainly(ops: Ops) -> None:
    await ops.say("drain eu-west --for 1h outage test")
    async with httpx.AsyncClient() as http:
        await http.post(f"{ops.world.cloudflare.server.url}/_sandbox/faults", json={"kind": "500"})
        reply = render_message(await ops.press("Drain eu-west"))
    assert reply.startswith("☁️ Cloudflare: Cloudflare failed (HTTP 500)")
    assert "Nothing was changed" in reply and "Error id" not in reply
    assert await ops.pool_enabled("eu-west")
