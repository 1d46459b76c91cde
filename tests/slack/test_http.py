"""The Slack path over real HTTP: signed commands in, replies out through the response URL."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlencode

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from bot import metrics
from bot.db.engine import sessionmaker
from bot.db.models import AuditEntry
from bot.sandbox.render import render_message

from ..conftest import Served


def text_of(reply: dict[str, Any]) -> str:
    return render_message(reply)


async def test_status_names_regions_and_states_after_a_break(served: Served) -> None:
    await served.world.gateways["eu-west"].set_mode("degraded", check="d1")
    exchange = await served.user.command("status")
    assert exchange.status == 200
    assert exchange.ack_seconds < 1.0
    [reply] = exchange.replies
    assert reply["response_type"] == "ephemeral"
    shown = text_of(reply)
    # Cloudflare's monitor has not noticed yet: said as such, not as a gray failure.
    verdict = reply["text"]
    assert verdict.startswith(
        ":rotating_light: Failover status: eu-west down: d1 error; Cloudflare has not noticed "
        "yet (its monitor needs up to 2.5 s) and still sends eu-west traffic"
    )
    assert "gray failure" not in verdict
    assert "users at relay WEU get HTTP 503" in verdict
    assert "🟢 us-east (primary) · pool `foundation-us-east` · healthy" in shown
    assert "🔴 eu-west (secondary) · pool `foundation-eu-west` · down" in shown
    assert "`gateway-eu-west` HTTP 503: d1 error" in shown
    assert "🟢 apac-sg (tertiary)" in shown


async def test_status_all_healthy_and_one_region(served: Served) -> None:
    [reply] = (await served.user.command("status")).replies
    assert text_of(reply).startswith("✅ all healthy")
    [reply] = (await served.user.command("status APAC-SG")).replies
    shown = text_of(reply)
    assert "apac-sg (tertiary) · pool" in shown
    assert "(primary) · pool" not in shown and "(secondary) · pool" not in shown


async def test_status_public_is_posted_in_the_channel(served: Served) -> None:
    exchange = await served.user.command("status public", channel="C0OPS")
    [reply] = exchange.replies
    assert reply["response_type"] == "in_channel"
    assert served.world.slack.channels["C0OPS"][0]["text"].endswith("all healthy")


async def test_status_answers_within_its_deadline_with_a_slow_origin(served: Served) -> None:
    await served.world.gateways["apac-sg"].set_mode("slow", delay=6)
    exchange = await served.user.command("status")
    [reply] = exchange.replies
    assert exchange.reply_seconds is not None and exchange.reply_seconds < 2.5 + 0.5
    shown = text_of(reply)
    assert "apac-sg unknown: no answer within 2.2 s" in shown.splitlines()[0]
    assert "🟢 us-east" in shown


async def test_bad_input_gets_short_ephemeral_answers(served: Served) -> None:
    cases = {
        "frobnicate": "`frobnicate` is not a /failover command. Commands: `status`, `check`, ",
        "status mars": "Unknown region `mars`. Known regions: `us-east`, `eu-west`, `apac-sg`.",
        "teleport eu-west": "`teleport` is not a /failover command.",
        'status "eu-west': "A quote is not closed.",
    }
    for text, expected in cases.items():
        [reply] = (await served.user.command(text)).replies
        assert reply["response_type"] == "ephemeral"
        assert expected in text_of(reply), text
        assert "Traceback" not in str(reply)


async def test_help_lists_every_subcommand(served: Served) -> None:
    for text in ("help", ""):
        [reply] = (await served.user.command(text)).replies
        shown = text_of(reply)
        for command in served.bot.router.commands.values():
            assert f"/failover {command.usage}" in shown


async def test_smart_punctuation_is_forgiven(served: Served) -> None:
    [reply] = (await served.user.command("status \u201ceu-west\u201d")).replies
    assert "eu-west" in text_of(reply) and "Unknown" not in text_of(reply)


async def test_every_command_is_audited(served: Served) -> None:
    await served.user.command("status eu-west", user="U0ALICE")
    await served.user.command("status mars", user="U0BOB")
    sessions = sessionmaker(served.bot.engine)
    async with sessions() as session:
        rows = list(await session.scalars(select(AuditEntry).order_by(AuditEntry.id)))
    assert [(r.user_id, r.text, r.outcome) for r in rows] == [
        ("U0ALICE", "status eu-west", "ok"),
        ("U0BOB", "status mars", "rejected"),
    ]
    assert rows[0].channel_id == "C0FAILOVER" and rows[0].team_id == "T0SANDBOX"
    assert rows[0].at.tzinfo is not None


def _form(text: str = "status") -> str:
    return urlencode(
        {
            "command": "/failover",
            "text": text,
            "user_id": "U1",
            "response_url": "http://127.0.0.1:9/x",
        }
    )


async def test_bad_signature_is_401(served: Served) -> None:
    body = _form()
    headers = served.user.signed_headers(body)
    headers["X-Slack-Signature"] = "v0=" + "0" * 64
    async with httpx.AsyncClient() as http:
        assert (
            await http.post(served.events_url, content=body, headers=headers)
        ).status_code == 401
        unsigned = {"Content-Type": "application/x-www-form-urlencoded"}
        assert (
            await http.post(served.events_url, content=body, headers=unsigned)
        ).status_code == 401


async def test_stale_timestamp_is_401(served: Served) -> None:
    body = _form()
    stale = served.user.signed_headers(body, timestamp=int(time.time()) - 6 * 60)
    async with httpx.AsyncClient() as http:
        assert (await http.post(served.events_url, content=body, headers=stale)).status_code == 401
    assert served.world.slack.calls == []  # nothing was done for it


async def test_healthz(served: Served) -> None:
    async with httpx.AsyncClient() as http:
        resp = await http.get(f"{served.server.url}/healthz")
    assert resp.status_code == 200 and resp.json() == {"ok": True, "database": "ok"}


async def test_metrics_in_prometheus_format(served: Served) -> None:
    await served.user.command("status")
    await served.user.command("status mars")
    async with httpx.AsyncClient() as http:
        resp = await http.get(f"{served.server.url}/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    text = resp.text
    assert (
        'failover_probe_results_total{origin="gateway-eu-west",outcome="healthy",region="eu-west"}'
        in text
    )
    assert 'failover_slack_replies_total{outcome="rejected"}' in text
    assert 'failover_cloudflare_calls_total{result="ok"}' in text
    assert "failover_probe_seconds_bucket" in text


async def test_a_metrics_page_of_many_origins_is_sent_whole_in_pieces(served: Served) -> None:
    # More origins than one chunk of the page holds (bot/metrics.py CHUNK): the scraper still
    # gets one valid page with every origin's series, in the order they were written.
    names = [f"o-{i:03d}" for i in range(2 * metrics.CHUNK + 50)]
    for name in names:
        metrics.origin_probes("chunked", name).observe(0.02, "healthy")
    async with httpx.AsyncClient() as http:
        resp = await http.get(f"{served.server.url}/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(resp.text)}
    counts = [
        s.labels["origin"]
        for s in families["failover_probe_seconds"].samples
        if s.name == "failover_probe_seconds_count" and s.labels["region"] == "chunked"
    ]
    assert counts == names
    healthy = [
        s.labels["origin"]
        for s in families["failover_probe_results"].samples
        if s.name == "failover_probe_results_total" and s.labels["region"] == "chunked"
    ]
    assert healthy == names
    assert "failover_pool_state" in families and "failover_alerts_posted" in families


async def test_head_metrics_then_get_on_one_connection(served: Served) -> None:
    # A HEAD (an uptime checker's) gets headers only: a body after it would be read on the same
    # keep-alive connection as the start of the next answer.
    async with httpx.AsyncClient() as http:
        head = await http.head(f"{served.server.url}/metrics")
        get = await http.get(f"{served.server.url}/metrics")
    assert head.status_code == 200 and head.content == b""
    assert get.status_code == 200 and "failover_probe_seconds" in get.text
