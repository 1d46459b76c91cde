"""The drain driver on the fake load balancer and the list clock: apply, expire, restore, rejoin,
Cloudflare failing, origin drains and restores of pools disabled outside the bot."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.fleet import Fleet
from bot.operations.drain import DrainDriver
from bot.operations.state import OpState, Restore
from bot.safety import Proposal

from ..fakes import T0
from ..reading import audited_changes, journal, operation
from .conftest import Rig

EU = "foundation-eu-west"
EU_GEOS = "WEU EEU ME NAF SAF"


@pytest.fixture
def driver(rig: Rig) -> DrainDriver:
    return DrainDriver(rig.fleet, rig.sessions, rig.lb, rig.clock)


async def drive(rig: Rig, driver: DrainDriver, after: float = 0) -> None:
    """One pass of the driver (the scheduler runs it every second), ``after`` seconds on."""
    rig.clock.advance(after)
    await driver.drive(rig.channel)


async def test_nothing_changes_before_the_confirm(rig: Rig, driver: DrainDriver) -> None:
    proposed = await rig.ops.propose(Proposal("drain", "eu-west"), "upgrade", "U0OPERATOR")
    assert proposed.operation is not None
    await drive(rig, driver)
    assert rig.lb.changes == [] and rig.lb.enabled("eu-west")
    assert (await operation(rig.sessions, proposed.operation.id)).state == "awaiting_confirmation"
    assert rig.channel.posts == []


async def test_a_confirmed_drain_is_applied_audited_and_told(rig: Rig, driver: DrainDriver) -> None:
    op_id = await rig.confirmed("drain", "eu-west", length=600, reason="database upgrade")
    assert (await operation(rig.sessions, op_id)).state == "applying"
    assert rig.lb.changes == []  # the workflow only writes the state: the driver calls

    await drive(rig, driver)
    assert rig.lb.changes == [("set_pool_enabled", EU, "False")]
    assert not rig.lb.enabled("eu-west")
    op = await operation(rig.sessions, op_id)
    assert op.state == "active"
    assert (op.applied_at, op.expires_at) == (T0, T0 + timedelta(seconds=600))
    assert await audited_changes(rig.sessions) == [
        (f"drain #{op_id}: disabled {EU}", "reason: database upgrade")
    ]
    # The operation's message, its thread, then the message brought up to date.
    assert [p.method for p in rig.channel.posts] == [
        "post_operation",
        "post_operation_note",
        "update_operation",
    ]
    message = rig.channel.posts[0]
    assert message.text == f"drain #{op_id} of eu-west: active"
    assert rig.channel.notes() == ["drained; restores itself at 14:10:00 UTC"]
    assert rig.channel.thread(message.ts) == [rig.channel.posts[1]]
    # The blast radius of when it was applied, which the watch uses to keep these moves apart.
    assert message.operation is not None
    moved = {r.geo: r.after for r in message.operation.blast if r.moves}
    assert moved == dict.fromkeys(EU_GEOS.split(), "us-east")

    await drive(rig, driver, after=1)
    assert rig.lb.changes == [("set_pool_enabled", EU, "False")]  # applied once
    assert len(rig.channel.of("post_operation")) == 1  # one message per operation


async def test_expiry_restores_at_expires_at_then_rejoins(rig: Rig, driver: DrainDriver) -> None:
    op_id = await rig.confirmed("drain", "eu-west", length=600)
    await drive(rig, driver)
    await drive(rig, driver, after=599)
    assert (await operation(rig.sessions, op_id)).state == "active"
    assert not rig.lb.enabled("eu-west")

    await drive(rig, driver, after=1)  # expires_at
    op = await operation(rig.sessions, op_id)
    assert op.state == "rejoining" and op.restored_at == T0 + timedelta(seconds=600)
    assert rig.lb.changes[-1] == ("set_pool_enabled", EU, "True")
    assert rig.lb.enabled("eu-west") and rig.lb.pool_of("eu-west").healthy is None
    assert rig.channel.notes()[-2:] == [
        "the drain expired: restoring it",
        "re-enabled; watching for its regions to return",
    ]

    # Cloudflare has not checked the pool again: its regions are still served elsewhere.
    await drive(rig, driver, after=5)
    assert (await operation(rig.sessions, op_id)).state == "rejoining"
    rig.lb.set_health("eu-west", True)
    await drive(rig, driver, after=2)
    op = await operation(rig.sessions, op_id)
    assert op.state == "restored" and op.finished_at == rig.clock()
    assert rig.channel.notes()[-1] == f"serves {EU_GEOS} again, 7 s after the restore"
    assert [text for text, _ in await audited_changes(rig.sessions)] == [
        f"drain #{op_id}: disabled {EU}",
        f"drain #{op_id}: enabled {EU}",
    ]
    assert rig.channel.of("update_operation")[-1].text == f"drain #{op_id} of eu-west: restored"


async def test_rejoin_gives_up_after_the_rejoin_timeout(
    rig: Rig, driver: DrainDriver, fleet: Fleet
) -> None:
    op_id = await rig.confirmed("drain", "eu-west", length=3600)
    await drive(rig, driver)
    assert (await rig.ops.restore("eu-west", "U0OPERATOR"))[0] is Restore.RESTORING
    await drive(rig, driver)
    assert (await operation(rig.sessions, op_id)).state == "rejoining"
    await drive(rig, driver, after=fleet.operations.rejoin_timeout)
    assert (await operation(rig.sessions, op_id)).state == "rejoining"  # not yet: after it
    await drive(rig, driver, after=1)
    assert (await operation(rig.sessions, op_id)).state == "restored"
    assert rig.channel.notes()[-1] == f"not serving {EU_GEOS} after 121 s: see /failover status"


async def test_a_restore_asked_while_the_disable_is_in_flight_wins(
    rig: Rig, driver: DrainDriver
) -> None:
    op_id = await rig.confirmed("drain", "eu-west", length=3600)
    answers: list[Restore] = []

    async def restore() -> None:
        answers.append((await rig.ops.restore("eu-west", "U0OTHER"))[0])

    rig.lb.during_next("set_pool_enabled", restore)
    await drive(rig, driver)
    assert answers == [Restore.RESTORING]
    op = await operation(rig.sessions, op_id)
    assert op.state == "restoring" and op.applied_at == T0
    assert await journal(rig.sessions, op_id) == [
        "proposed by U0OPERATOR: maintenance",
        "confirmed by U0OPERATOR",
        "restore asked by U0OTHER",
        "drained, and a restore is already asked",
    ]
    await drive(rig, driver, after=1)
    assert (await operation(rig.sessions, op_id)).state == "rejoining"
    assert rig.lb.changes == [("set_pool_enabled", EU, "False"), ("set_pool_enabled", EU, "True")]
    assert rig.lb.enabled("eu-west")


async def test_cloudflare_failing_keeps_the_phase_and_says_so_once_a_minute(
    rig: Rig, driver: DrainDriver
) -> None:
    op_id = await rig.confirmed("drain", "eu-west", length=3600)
    rig.lb.fail_next("set_pool_enabled", times=3)
    said = "Cloudflare: Cloudflare failed (HTTP 500); try again shortly; trying again"
    await drive(rig, driver)
    assert (await operation(rig.sessions, op_id)).state == "applying"
    assert rig.lb.enabled("eu-west")
    assert rig.channel.notes() == [said]
    await drive(rig, driver, after=30)
    assert rig.channel.notes() == [said]  # within the minute: not said again
    await drive(rig, driver, after=30)
    assert rig.channel.notes() == [said, said]
    await drive(rig, driver, after=1)  # Cloudflare answers again
    op = await operation(rig.sessions, op_id)
    assert op.state == "active" and op.applied_at == T0 + timedelta(seconds=61)
    assert not rig.lb.enabled("eu-west")
    assert len(rig.lb.changes) == 4  # three failed calls, one that landed
    assert [text for text, _ in await audited_changes(rig.sessions)] == [
        f"drain #{op_id}: disabled {EU}"
    ]


async def test_a_failed_restore_is_retried_from_its_phase(rig: Rig, driver: DrainDriver) -> None:
    op_id = await rig.confirmed("drain", "eu-west", length=3600)
    await drive(rig, driver)
    await rig.ops.restore("eu-west", "U0OPERATOR")
    rig.lb.fail_next("live_view")
    await drive(rig, driver, after=1)
    assert (await operation(rig.sessions, op_id)).state == "restoring"
    assert not rig.lb.enabled("eu-west")
    rig.lb.fail_next("set_pool_enabled")
    await drive(rig, driver, after=1)
    assert (await operation(rig.sessions, op_id)).state == "restoring"
    assert (
        rig.channel.notes().count(
            "Cloudflare: Cloudflare failed (HTTP 500); try again shortly; trying again"
        )
        == 1
    )
    await drive(rig, driver, after=1)
    assert (await operation(rig.sessions, op_id)).state == "rejoining"
    assert rig.lb.enabled("eu-west")


async def test_an_origin_drain_disables_and_enables_the_origin_only(
    rig: Rig, driver: DrainDriver
) -> None:
    op_id = await rig.confirmed("drain", "eu-west", origin="gateway-eu-west", length=3600)
    await drive(rig, driver)
    assert rig.lb.changes == [("set_origin_enabled", EU, "gateway-eu-west", "False")]
    pool = rig.lb.pool_of("eu-west")
    assert pool.enabled and not pool.origins[0].enabled
    assert pool.healthy is False  # its only origin is out: Cloudflare steers around the pool
    assert (await operation(rig.sessions, op_id)).state == "active"

    await rig.ops.restore("eu-west", "U0OPERATOR")
    await drive(rig, driver, after=1)
    assert rig.lb.changes[-1] == ("set_origin_enabled", EU, "gateway-eu-west", "True")
    assert rig.lb.pool_of("eu-west").origins[0].enabled
    assert [text for text, _ in await audited_changes(rig.sessions)] == [
        f"drain #{op_id}: disabled gateway-eu-west",
        f"drain #{op_id}: enabled gateway-eu-west",
    ]
    rig.lb.set_health("eu-west", True)
    await drive(rig, driver, after=1)
    assert (await operation(rig.sessions, op_id)).state == "restored"


async def test_restoring_a_pool_disabled_outside_the_bot_enables_its_origins_too(
    rig: Rig, driver: DrainDriver
) -> None:
    assert await rig.ops.restore("eu-west", "U0OPERATOR") == (Restore.NOT_DRAINED, None)
    rig.lb.set_outside("eu-west", enabled=False, origins_enabled=False)
    outcome, view = await rig.ops.restore("eu-west", "U0OPERATOR")
    assert outcome is Restore.RESTORING and view is not None
    await drive(rig, driver)
    assert rig.lb.changes == [
        ("set_pool_enabled", EU, "True"),
        ("set_origin_enabled", EU, "gateway-eu-west", "True"),
    ]
    pool = rig.lb.pool_of("eu-west")
    assert pool.enabled and all(o.enabled for o in pool.origins)
    assert (await operation(rig.sessions, view.id)).state == "rejoining"
    assert await audited_changes(rig.sessions) == [
        (
            f"drain #{view.id}: enabled {EU}",
            "reason: restore of a pool disabled outside the bot",
        )
    ]
    assert rig.channel.notes() == [
        "restore asked by U0OPERATOR",
        "re-enabled; watching for its regions to return",
    ]


async def test_the_fallback_pool_is_drained_only_once_another_approver_approved(
    rig: Rig, driver: DrainDriver
) -> None:
    proposed = await rig.ops.propose(Proposal("drain", "us-east"), "test", "U0OPERATOR")
    assert proposed.operation is not None and proposed.assessment.needs_approval
    op_id = proposed.operation.id
    assert (await rig.ops.confirm(op_id, "U0OPERATOR")).state == "awaiting_approval"
    await drive(rig, driver)
    assert rig.lb.changes == []
    assert (await rig.ops.approve(op_id, "U0APPROVER")).state == "applying"
    await drive(rig, driver)
    assert rig.lb.changes == [("set_pool_enabled", "foundation-us-east", "False")]
    assert (await operation(rig.sessions, op_id)).approved_by == "U0APPROVER"


async def test_a_cancelled_drain_changes_nothing(rig: Rig, driver: DrainDriver) -> None:
    proposed = await rig.ops.propose(Proposal("drain", "eu-west"), "no", "U0OPERATOR")
    assert proposed.operation is not None
    cancel = await rig.ops.cancel(proposed.operation.id, "U0OPERATOR")
    assert cancel.op is not None and cancel.op.state == OpState.CANCELLED
    await drive(rig, driver)
    assert rig.lb.changes == [] and rig.channel.posts == []
