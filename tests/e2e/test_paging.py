"""Paging end to end through the sandbox: a real outage pages the PagerDuty stand-in once,
updates the alert as the incident moves, resolves it at the close; the Acknowledge button in the
channel acknowledges in PagerDuty; a PagerDuty outage delays the page until it is back; an
acknowledgement in PagerDuty comes back by signed webhook and shows on the Slack message."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.assembly import Bot, migrated_bot
from bot.sandbox.pagerduty import Alert
from bot.sandbox.render import render_message
from bot.sandbox.servers import LocalServer
from bot.sandbox.slack_client import SlackUser
from bot.sandbox.world import CHANNEL, Sandbox
from bot.slack.server import build_web_app

from ..conftest import CONFIG, FAST, eventually


@dataclass
class Paged:
    world: Sandbox
    bot: Bot
    user: SlackUser

    def incident_message(self) -> dict[str, Any]:
        top = [m for m in self.world.slack.channels.get(CHANNEL, []) if not m.get("thread_ts")]
        assert top, "no incident message"
        return top[0]

    def shown(self) -> str:
        """The incident message as Slack shows it ("" until it is posted)."""
        if not any(not m.get("thread_ts") for m in self.world.slack.channels.get(CHANNEL, [])):
            return ""
        return render_message(self.incident_message())

    def alert(self) -> Alert:
        [alert] = self.world.pagerduty.alerts
        return alert

    async def click(self, label: str, user: str = "U0OPERATOR") -> str:
        for block in self.incident_message().get("blocks", []):
            for element in block.get("elements", []):
                if element.get("type") == "button" and label in element["text"]["text"]:
                    exchange = await self.user.click(
                        element["action_id"], element["value"], user=user
                    )
                    assert exchange.status == 200 and exchange.replies
                    return render_message(exchange.replies[-1])
        raise AssertionError(f"no button {label!r} in {self.shown()}")


@pytest.fixture
async def paged(tmp_path: Path) -> AsyncIterator[Paged]:
    world = Sandbox(CONFIG, tmp_path, monitor_interval=1.0, propagation=0.5, watch=FAST,
                    paging=True)  # fmt: skip
    await world.start()
    settings = world.bot_settings(f"sqlite+aiosqlite:///{tmp_path}/paging.db")
    bot = await migrated_bot(settings, watch=True)
    assert bot.leadership is not None and bot.leadership.pages is not None
    bot.leadership.pages.first_backoff = 0.5  # PagerDuty's outage is short here
    server = LocalServer(
        build_web_app(bot.slack, bot.engine, settings=bot.settings, webhooks=bot.webhooks)
    )
    await server.start()
    world.page_bot(server.url)
    user = SlackUser(f"{server.url}/slack/events", world.slack.url, world.signing_secret)
    yield Paged(world, bot, user)
    await user.aclose()
    await server.close()
    await bot.aclose()
    await world.close()


async def until(check: Any, within: float = 20) -> None:
    async def holds() -> bool:
        return bool(check())

    await eventually(holds, within=within, every=0.2)


async def test_outage_triggers_once_updates_and_resolves_on_close(paged: Paged) -> None:
    await paged.world.gateways["us-east"].set_mode("down")
    await until(lambda: paged.world.pagerduty.alerts)
    alert = paged.alert()
    assert alert.status == "triggered" and alert.severity == "critical"
    assert "us-east down" in alert.summary
    await until(lambda: "Paged PagerDuty" in paged.shown())
    assert "not acknowledged yet" in paged.shown() and "Acknowledge" in paged.shown()

    await paged.world.gateways["us-east"].set_mode("healthy")
    await until(lambda: paged.alert().status == "resolved", within=40)
    assert len(paged.world.pagerduty.alerts) == 1  # one alert for the whole incident
    actions = [e["action"] for e in paged.alert().log]
    assert actions[0] == "trigger" and actions[-1] == "resolve"
    assert actions.count("resolve") == 1 and set(actions[:-1]) == {"trigger"}
    await until(lambda: "RESOLVED" in paged.shown())
    assert "Acknowledge" not in paged.shown().replace("not acknowledged", "")


async def test_ack_from_slack_reaches_pagerduty_and_the_message(paged: Paged) -> None:
    await paged.world.gateways["eu-west"].set_mode("down")
    await until(lambda: "Paged PagerDuty" in paged.shown())
    refused = await paged.click("Acknowledge", user="U0STRANGER")
    assert "Only operators may acknowledge pages." in refused
    assert paged.alert().status == "triggered"

    said = await paged.click("Acknowledge")
    assert "You acknowledged incident #1" in said
    await until(lambda: paged.alert().status == "acknowledged")
    await until(lambda: "Acknowledged by" in paged.shown())
    shown = paged.shown()
    assert "in Slack at" in shown and "UTC" in shown
    assert "[Acknowledge]" not in shown  # the button goes once acknowledged
    # PagerDuty tells its webhook of the bot's own acknowledgement: answered, nothing recorded.
    await until(lambda: paged.world.pagerduty.subscriptions[0].deliveries == [202])
    thread = [
        render_message(m)
        for m in paged.world.slack.channels.get(CHANNEL, [])
        if m.get("thread_ts") and m.get("thread_ts") != m.get("ts")
    ]
    assert sum("acknowledged" in t.lower() for t in thread) <= 1
    assert "in Slack at" in paged.shown() and "in PagerDuty" not in paged.shown()


async def test_pagerduty_down_during_an_outage_pages_when_it_is_back(paged: Paged) -> None:
    paged.world.pagerduty.fail(503)  # until healed
    await paged.world.gateways["us-east"].set_mode("down")
    await until(lambda: len(paged.world.pagerduty.events) >= 2)  # tried, and tried again
    assert paged.world.pagerduty.alerts == []
    # The watch and Slack carry on meanwhile: the incident is in the channel, saying the page
    # is not through yet, with nothing to acknowledge.
    await until(lambda: "Paging PagerDuty: retrying, HTTP 503" in paged.shown())
    assert "Paged PagerDuty" not in paged.shown() and "[Acknowledge]" not in paged.shown()
    tried = len(paged.world.pagerduty.events)
    paged.world.pagerduty.fail(429, count=1)  # then rate limited once, then it is back
    await until(lambda: paged.world.pagerduty.alerts, within=30)
    assert len(paged.world.pagerduty.events) > tried + 1  # the 429 was retried too
    assert paged.alert().status == "triggered" and "us-east down" in paged.alert().summary
    await until(lambda: "Paged PagerDuty" in paged.shown())  # the message follows the page


async def test_ack_in_pagerduty_shows_on_the_slack_message(paged: Paged) -> None:
    await paged.world.gateways["apac-sg"].set_mode("down")
    await until(lambda: paged.world.pagerduty.alerts)
    await until(lambda: "Paged PagerDuty" in paged.shown())
    await paged.world.pagerduty.acknowledge(paged.alert().dedup_key, agent="Pat Oncall")
    assert paged.world.pagerduty.subscriptions[0].deliveries == [202]
    await until(lambda: "Acknowledged by Pat Oncall in PagerDuty" in paged.shown())
    # The thread says it too, and PagerDuty is not told back (its alert keeps its own log).
    await until(
        lambda: any(
            "acknowledged in PagerDuty by Pat Oncall" in render_message(m)
            for m in paged.world.slack.channels.get(CHANNEL, [])
            if m.get("thread_ts") and m.get("thread_ts") != m.get("ts")
        )
    )
    assert all(e["action"] != "acknowledge" or e.get("by") for e in paged.alert().log)
