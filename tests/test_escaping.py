"""Text from users and peers is data, never markup (issue 12).

Slack sends a ``<`` typed in a slash command as ``&lt;``; the parser unescapes it to match words,
so every view must escape it again: otherwise ``/failover note 2 &lt;!channel&gt;`` pings the
channel and ``&lt;http://evil|restore eu-west&gt;`` posts a disguised link. These tests render
every view that carries such text to its Block Kit JSON and read every mrkdwn field and every
top-level ``text`` (both parsed by Slack); plain_text (headers, buttons) is never parsed. Then the
Markdown postmortem, then the whole path through the Slack stand-in.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from slack_sdk.web.async_client import AsyncWebClient

from bot.assembly import Bot
from bot.fleet import load_fleet
from bot.fleetstatus import CloudflareRead, FleetStatus, RegionStatus
from bot.invocation import Invocation
from bot.lbmodel import LiveView
from bot.monitor import PoolState
from bot.observations import Outcome, ProbeResult
from bot.plancheck import CheckLine
from bot.planned import planned_view
from bot.reads import (
    BoardOperation,
    Dashboard,
    DrillRecord,
    EntryView,
    Figures,
    IncidentView,
    JournalLine,
    OperationView,
    PublicCheck,
    SilenceView,
)
from bot.routing import Users
from bot.safety import Assessment, BlastRow, Refusal, Rule
from bot.sandbox.render import render_message
from bot.sandbox.servers import LocalServer
from bot.sandbox.slack_client import SlackUser
from bot.sandbox.world import CHANNEL, Sandbox
from bot.slack.notifier import SlackNotifier
from bot.slack.server import build_web_app
from bot.views.alerts import incident_blocks, thread_blocks, thread_text
from bot.views.check import check_reply
from bot.views.errors import provider_error, usage_error
from bot.views.help import help_reply
from bot.views.home import home_view
from bot.views.operations import (
    approval_blocks,
    confirmed_reply,
    drains_reply,
    drill_report_reply,
    drills_reply,
    dry_run_reply,
    noop_reply,
    operation_blocks,
    proposal_reply,
    refusal_reply,
)
from bot.views.reply import Reply
from bot.views.silences import silenced_reply, silences_reply
from bot.views.status import status_reply
from bot.views.text import escape, mention
from bot.views.timeline import (
    incidents_reply,
    markdown_reply,
    noted_reply,
    postmortem_markdown,
    timeline_reply,
)
from bot.views.whatif import whatif_reply
from bot.whatif import Row, WhatIf
from commands.base import Services
from commands.router import Router

from .conftest import CONFIG, eventually
from .e2e.conftest import Ops
from .test_fuzz import Audit, NoProbes

FLEET = load_fleet(CONFIG)
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
# The ids the bot mentions on purpose: requesters and approvers it got from Slack itself.
REQUESTER, APPROVER = "U0OPERATOR", "U0APPROVER"
BOTS_OWN = re.compile(rf"<@(?:{REQUESTER}|{APPROVER})>")
# What Slack would parse: special mentions, users, channels, links (labelled or not).
CONTROL = re.compile(r"<[!@#]|<(?:https?|mailto):|<[^<>]*\|[^<>]*>")

EVIL = [
    "<!channel>", "<!here>", "<!everyone>", "<!subteam^S0EVIL>", "<@U0EVIL>", "<@W0EVIL|boss>",
    "<#C0EVIL>", "<#C0EVIL|ops>", "<http://evil|restore eu-west>", "<https://evil.example>",
    "<mailto:a@evil.example|ops>", "&lt;!channel&gt;", "&amp;lt;", "&", "<", ">", "|", "`",
    "```", "\n", "\n# heading\n", "*", "_", "~", "\\",
]  # fmt: skip
user_text = st.lists(
    st.one_of(st.sampled_from(EVIL), st.text(max_size=20)), min_size=1, max_size=8
).map("".join)


def unescape(text: str) -> str:
    """What Slack shows for mrkdwn that holds no control sequence."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def parsed_texts(message: Any) -> list[str]:
    """Every text Slack parses as mrkdwn: mrkdwn text objects anywhere in the JSON, and the
    message's top-level ``text``."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "mrkdwn" and isinstance(node.get("text"), str):
                found.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(message)
    if isinstance(message, dict) and isinstance(message.get("text"), str):
        found.append(message["text"])
    return found


def assert_inert(message: Any) -> None:
    for text in parsed_texts(message):
        rest = BOTS_OWN.sub("", text)
        assert CONTROL.search(rest) is None, text
        assert "<" not in rest and ">" not in rest, text  # nothing Slack could read as markup


def message_of(reply: Reply) -> dict[str, Any]:
    return {"text": reply.text, "blocks": reply.block_dicts()}


def blocks_message(blocks: list[Any]) -> dict[str, Any]:
    return {"blocks": [b.to_dict() for b in blocks]}


def incident(t: str, entries: list[EntryView]) -> IncidentView:
    return IncidentView(
        id=7,
        title=t,
        severity="critical",
        opened_at=NOW,
        began_at=NOW,
        closed_at=None,
        regions=["us-east", "eu-west"],  # failover.toml's names: they label buttons
        entries=entries,
        figures=Figures(3.0, 12.0, None),
        rto_target=30.0,
        rejoin_target=60.0,
        now=NOW + timedelta(minutes=3),
        states={"us-east": PoolState.DOWN},
        failed_over={"WNAM": t, t: "eu-west"},
        stranded={"SAF": t},
    )


def entry(t: str, kind: str = "Note") -> EntryView:
    return EntryView(1, NOW, kind, t, "info", t, "operator", author=t)


def operation(t: str, kind: str = "drain", state: str = "active") -> OperationView:
    return OperationView(
        id=3,
        kind=kind,
        region="eu-west",
        origin=None,
        state=state,
        requested_by=REQUESTER,
        approved_by=APPROVER,
        reason=t,
        break_glass=[t],
        applied_at=NOW,
        expires_at=NOW + timedelta(hours=1),
        blast=[BlastRow(t, t, t, False, after_users=t), BlastRow("WEU", t, t, True)],
        created_at=NOW,
        rto={t: 3.0},
        rejoin={t: None},
    )


def assessment(t: str) -> Assessment:
    refusal = Refusal(Rule.NO_HEALTHY_POOL, t)
    blast = [BlastRow(t, t, t, False, after_users=t)]
    return Assessment(blast, [refusal], [refusal], needs_approval=True, noop=None)


def fleet_status(t: str) -> FleetStatus:
    """us-east down with the gateway's, Cloudflare's and the relays' words all ``t``."""
    view = planned_view(FLEET, healthy={"us-east": False})
    pools = dict(view.pools)
    east = pools[FLEET.regions["us-east"].pool]
    origins = tuple(replace(o, healthy=False, failure_reason=t) for o in east.origins)
    pools[east.id] = replace(east, origins=origins)
    west = pools[FLEET.regions["eu-west"].pool]
    pools[west.id] = replace(west, name=t)  # a pool named in the account, unknown to the plan
    assert view.monitor is not None
    live = LiveView(
        replace(view.load_balancer, name=t),
        pools,
        replace(view.monitor, path=t),
        read_at=NOW,
        stale=t,
    )
    probe = ProbeResult(
        "us-east", t, "http://x", Outcome.HTTP_STATUS, t, NOW, 0.2, 503, {t: t}, attempts=2
    )
    regions = [
        RegionStatus(FLEET.regions["us-east"], PoolState.DOWN, [probe], pools[east.id]),
        RegionStatus(FLEET.regions["eu-west"], PoolState.HEALTHY, [], pools[west.id]),
    ]
    public = [
        PublicCheck(t, "WEU", error=t),
        PublicCheck(t, "ENAM", status=503, said=t, retry_after=t),
    ]
    return FleetStatus(FLEET, regions, NOW, 0.4, CloudflareRead(live, t), public)


def every_view(t: str) -> list[dict[str, Any]]:
    """Every view that carries user or peer text, rendered with ``t`` in each such place."""
    entries = [entry(t), entry(t, "CloudflareHealth"), entry(t, "PoolDown")]
    inc = incident(t, entries)
    op = operation(t)
    drill = operation(t, "drill", "succeeded")
    silence = SilenceView("eu-west", NOW + timedelta(hours=1), t, t)
    whatif = WhatIf(
        {"us-east": "down"},
        [Row((t,), t, t, True, Users.ORIGIN_ERRORS), Row(("WEU",), t, t, False, Users.SERVED)],
        t,
        [t],
        [t],
    )
    board = Dashboard(
        regions={"us-east": t},
        cloudflare={"us-east": t},
        moved={t: t},
        stranded={t: t},
        incidents=[t],
        operations=[BoardOperation(t, REQUESTER), BoardOperation(t, t)],
        next_game_day=t,
    )

    class Usage:
        usage, summary = t, t

    replies = [
        usage_error(f"`{t}` is not a region.", t),
        provider_error(t),
        noted_reply(7, t),
        incidents_reply([inc]),
        timeline_reply(inc),
        markdown_reply(inc),
        refusal_reply("drain", "eu-west", t, assessment(t)),
        dry_run_reply("drain", "eu-west", t, assessment(t)),
        proposal_reply(3, "drain", "eu-west", None, 3600.0, assessment(t)),  # origin: named
        confirmed_reply(replace(op, state="awaiting_approval"), REQUESTER),
        drains_reply([op, replace(op, requested_by=t)], t),
        drills_reply([drill, replace(drill, state="scheduled", at=NOW)]),
        drill_report_reply(DrillRecord(drill, [JournalLine(NOW, t)], [drill]), 30.0, 60.0),
        noop_reply(t),
        silenced_reply(silence, 3600.0),
        silences_reply([silence], NOW),
        status_reply(fleet_status(t), t),
        check_reply([CheckLine(t, False, t, t)], [CheckLine(t, True, t)], t, t),
        whatif_reply(whatif, t),
        help_reply([Usage()], [t]),
    ]
    messages = [message_of(r) for r in replies]
    messages += [
        blocks_message(incident_blocks(inc)),
        blocks_message(thread_blocks(inc, entries, False)),
        blocks_message(thread_blocks(inc, entries * 3, False)),  # flapping: the latest only
        blocks_message(thread_blocks(inc, [], True)),
        {"text": thread_text(inc, entries, False)},
        blocks_message(approval_blocks(op, REQUESTER)),
        blocks_message(approval_blocks(op, t)),
        blocks_message(operation_blocks(op)),
        blocks_message(operation_blocks(replace(op, requested_by="schedule", approved_by=t))),
        home_view(board, NOW),
    ]
    return messages


SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def test_escape_and_mention() -> None:
    assert escape("<!channel> & <http://evil|x>") == "&lt;!channel&gt; &amp; &lt;http://evil|x&gt;"
    assert escape("&lt;") == "&amp;lt;"  # shown as typed: "&lt;", not "<"
    assert mention("U0OPERATOR") == "<@U0OPERATOR>" and mention("W12AB") == "<@W12AB>"
    assert mention("schedule") == "schedule"  # not a Slack user id: text
    assert mention("<!channel>") == "&lt;!channel&gt;"


@SETTINGS
@given(t=user_text)
def test_no_user_text_becomes_markup_in_any_view(t: str) -> None:
    for message in every_view(t):
        assert_inert(message)


@SETTINGS
@given(t=user_text.filter(lambda t: len(t) < 500))
def test_user_text_is_shown_literally(t: str) -> None:
    """Escaped once: what Slack shows is what was typed (no ``&amp;lt;`` where ``<`` was)."""
    note = entry(t)
    shown = [
        parsed_texts(message_of(noted_reply(7, t)))[0],
        parsed_texts(blocks_message(thread_blocks(incident("x", [note]), [note], False)))[0],
        parsed_texts(blocks_message(approval_blocks(operation(t), REQUESTER)))[0],
        parsed_texts(blocks_message(operation_blocks(replace(operation(t), break_glass=[]))))[0],
    ]
    for text in shown:
        assert t in unescape(text)


@SETTINGS
@given(t=user_text, id=st.text(max_size=12))
def test_only_slack_user_ids_become_mentions(t: str, id: str) -> None:
    rendered = mention(id)
    if rendered.startswith("<@"):
        assert re.fullmatch(r"<@[UW][A-Z0-9]{2,}>", rendered)
    else:
        assert "<" not in rendered and unescape(rendered) == id


@SETTINGS
@given(t=user_text)
async def test_typed_words_echoed_in_usage_errors_stay_text(t: str) -> None:
    """What Slack would send (``<`` as ``&lt;``) and what a raw client could: both inert."""
    router = Router(Services(FLEET, NoProbes(FLEET)), Audit())
    typed = escape(t)
    for text in (typed, f"status {typed}", f"whatif {typed}", f"check {typed}", t):
        reply = await router.handle(Invocation(user_id="U1", text=text))
        assert_inert(message_of(reply))


class Client:
    """The Web API as the notifier uses it; records what would be sent."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def chat_postMessage(self, **args: Any) -> dict[str, str]:
        self.sent.append(args)
        return {"ts": "1.000001"}

    async def chat_update(self, **args: Any) -> dict[str, str]:
        self.sent.append(args)
        return {"ts": args["ts"]}

    async def views_publish(self, **args: Any) -> dict[str, str]:
        self.sent.append(args)
        return {}


@SETTINGS
@given(t=user_text)
async def test_the_notifier_sends_nothing_parsable(t: str) -> None:
    client = Client()
    notifier = SlackNotifier(cast(AsyncWebClient, client))
    inc = incident(t, [entry(t)])
    await notifier.post_incident("C1", inc)
    await notifier.update_incident("C1", "1", inc)
    await notifier.post_thread("C1", "1", inc, [entry(t)])
    await notifier.post_thread("C1", "1", inc, [], reminder=True)
    await notifier.post_operation("C1", operation(t))
    await notifier.update_operation("C1", "1", operation(t))
    await notifier.post_operation_note("C1", "1", f"12:00:00 UTC · proposed by U1: {t}")
    await notifier.publish_home("U1", Dashboard({}, {}, {}, incidents=[t]), NOW)
    for sent in client.sent:
        assert_inert(sent)
    assert unescape(client.sent[6]["text"]).endswith(t)  # the journal line, literally


# ---------------------------------------------------------------- the Markdown postmortem

HEADINGS = {"## Figures", "## Timeline (UTC)", "## Cause", "## What went well, what did not"}
HEADINGS |= {"## Actions"}


def cells(row: str) -> list[str]:
    """A GFM table row's cells: split on pipes that no backslash escapes."""
    out, cell, i = [], "", 0
    while i < len(row):
        if row[i] == "\\" and i + 1 < len(row):
            cell += row[i : i + 2]
            i += 2
            continue
        if row[i] == "|":
            out.append(cell)
            cell = ""
        else:
            cell += row[i]
        i += 1
    return [*out, cell][1:-1]


def note_row(markdown: str) -> str:
    rows = [line for line in markdown.splitlines() if "| Note |" in line]
    assert len(rows) == 1, markdown
    return rows[0]


def test_a_note_cannot_break_the_postmortem_table_heading_or_fence() -> None:
    note = "ok | forged cell\n# Root cause: the intern\n```\nfenced\n``` <!-- the rest hidden `x`"
    markdown = postmortem_markdown(incident("us-east down", [entry(note)]))
    headings = [line for line in markdown.splitlines() if line.startswith("#")]
    assert headings[1:] == ["## Figures", "## Timeline (UTC)", "## Cause",
                            "## What went well, what did not", "## Actions"]  # fmt: skip
    assert "```" not in markdown and "<!--" not in markdown
    row = note_row(markdown)
    assert len(cells(row)) == 5  # time, event, region, details, source
    details = cells(row)[3]
    assert "ok \\| forged cell <br> # Root cause" in details and "\\`\\`\\`" in details
    # In Slack the draft is in code blocks: each closes where the bot closes it.
    for block in markdown_reply(incident("x", [entry(note)])).block_dicts()[1:]:
        text = block["text"]["text"]
        assert text.startswith("```") and text.endswith("```") and text.count("```") == 2


@SETTINGS
@given(t=user_text)
def test_any_note_stays_one_cell_of_one_row(t: str) -> None:
    markdown = postmortem_markdown(incident("us-east down", [entry(t)]))
    lines = markdown.splitlines()
    assert [x for x in lines if x.startswith("#")][1:] == [
        "## Figures", "## Timeline (UTC)", "## Cause", "## What went well, what did not",
        "## Actions",
    ]  # fmt: skip
    assert "```" not in markdown
    assert len(cells(note_row(markdown))) == 5
    reply = markdown_reply(incident("x", [entry(t * 40)]))  # long: chunked, never clipped open
    for block in reply.block_dicts()[1:]:
        text = block["text"]["text"]
        assert len(text) <= 3000 and text.endswith("```") and text.count("```") == 2
    assert_inert(message_of(reply))


# ---------------------------------------------------------------- through the Slack stand-in

EVIL_TYPED = "&lt;!channel&gt; &lt;http://evil|restore eu-west&gt;"  # as Slack sends it
EVIL_SHOWN = "<!channel> <http://evil|restore eu-west>"  # what the user typed, and must see


def everything_sent(world: Sandbox) -> str:
    """All that reached the Slack stand-in: Web API calls and response_url answers."""
    calls = [c.args for c in world.slack.calls]
    return json.dumps([calls, world.slack.responses])


def assert_nothing_parsable(world: Sandbox) -> None:
    sent = everything_sent(world)
    assert "<!channel>" not in sent and "<http://evil" not in sent
    for call in world.slack.calls:
        assert_inert(call.args)
    for answers in world.slack.responses.values():
        for answer in answers:
            assert_inert(answer)


@pytest.fixture
async def ops(watching: tuple[Sandbox, Bot]) -> AsyncIterator[Ops]:
    world, bot = watching
    server = LocalServer(build_web_app(bot.slack))
    await server.start()
    user = SlackUser(f"{server.url}/slack/events", world.slack.url, world.signing_secret)
    yield Ops(world, bot, user)
    await user.aclose()
    await server.close()


def channel(world: Sandbox) -> list[dict[str, Any]]:
    return world.slack.channels.get(CHANNEL, [])


async def test_a_note_shows_literally_in_the_incident_thread(ops: Ops) -> None:
    world = ops.world
    await world.gateways["apac-sg"].set_mode("down")

    async def opened() -> bool:
        return any("thread_ts" not in m and "Incident #1" in str(m) for m in channel(world))

    await eventually(opened, within=15)
    answer = await ops.say(f"note 1 {EVIL_TYPED}")
    assert EVIL_SHOWN in answer  # the ephemeral "Noted" shows it as typed

    async def noted() -> bool:
        return any("thread_ts" in m and EVIL_SHOWN in render_message(m) for m in channel(world))

    await eventually(noted, within=10)
    timeline = await ops.say("timeline 1")
    assert EVIL_SHOWN in timeline
    assert_nothing_parsable(world)


async def test_a_drain_reason_shows_literally_in_the_operation_message(ops: Ops) -> None:
    shown = await ops.say(f"drain eu-west --for 1h {EVIL_TYPED}")
    assert "Ready to drain eu-west (#1)." in shown
    await ops.press("Drain eu-west")

    async def announced() -> bool:
        return any(f"reason: {EVIL_SHOWN}" in render_message(m) for m in channel(ops.world))

    await eventually(announced, within=10)
    assert EVIL_SHOWN in await ops.say("drains")
    assert_nothing_parsable(ops.world)


async def test_a_drain_reason_shows_literally_in_the_approval_request(ops: Ops) -> None:
    await ops.say(f"drain us-east --for 1h {EVIL_TYPED}")
    ask = await ops.press("Drain us-east")
    assert ask["response_type"] == "in_channel"  # posted to the channel for an approver
    shown = render_message(ask)
    assert "<@U0OPERATOR> asks to drain us-east" in shown and EVIL_SHOWN in shown
    assert any(EVIL_SHOWN in render_message(m) for m in channel(ops.world))
    assert_nothing_parsable(ops.world)


def test_the_demo_shows_mrkdwn_as_slack_does() -> None:
    """The console renders escaped mrkdwn as Slack displays it, plain_text as it is."""
    message = {
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "a &amp; b"}},
            {"type": "section", "text": {"type": "mrkdwn", "text": escape(EVIL_SHOWN)}},
        ]
    }
    assert render_message(message).splitlines() == ["a &amp; b", "═" * 11, EVIL_SHOWN]
