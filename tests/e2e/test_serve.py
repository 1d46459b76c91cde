"""`failover-bot serve` as the Procfile runs it: a real process on $PORT, talking to the sandbox."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

from bot.db import schema
from bot.db.engine import create_engine
from bot.sandbox.render import render_message
from bot.sandbox.servers import free_port
from bot.sandbox.slack_client import SlackUser
from bot.sandbox.world import Sandbox

from .conftest import serve_environment, start_serve


async def test_serve_answers_a_signed_status_and_stops_on_sigterm(
    world: Sandbox, tmp_path: Path
) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path}/bot.db"
    engine = create_engine(db)
    await schema.upgrade(engine)
    await engine.dispose()
    port = free_port()
    env = {
        k: v
        for k, v in serve_environment(world, db, port).items()
        if not k.startswith("CLOUDFLARE_") and k != "SLACK_CHANNEL"  # the Slack path alone
    } | {"LOG_LEVEL": "DEBUG"}  # the most a log could ever say
    proc = await start_serve(env, stderr=asyncio.subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    user = SlackUser(f"{base}/slack/events", world.slack.url, world.signing_secret)
    try:
        await world.gateways["apac-sg"].set_mode("erroring")
        exchange = await user.command("status")
        assert exchange.status == 200
        [reply] = exchange.replies
        shown = render_message(reply)
        assert shown.splitlines()[0] == (
            "🚨 apac-sg down: HTTP 500 (body is not JSON); users at relay SEAS get HTTP 500"
        )
        assert "Cloudflare: not configured" in shown
        # The Web API base came from SLACK_API_URL: Bolt checked its token against the stand-in.
        assert "auth.test" in [c.method for c in world.slack.calls]
        await user.command("frobnicate")
        # A request signed with the wrong secret: Bolt logs the refusal.
        bad = SlackUser(f"{base}/slack/events", world.slack.url, "not-the-secret")
        await bad.command("status", expect=0)
        await bad.aclose()
    finally:
        await user.aclose()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    assert proc.stderr is not None
    logged = (await proc.stderr.read()).decode()
    lines = [
        json.loads(line) for line in logged.splitlines() if line.strip()
    ]  # JSON, not a terminal
    assert lines and {"ts", "level", "logger", "message"} <= set(lines[0])
    for secret in (world.bot_token, world.signing_secret):
        assert secret not in logged
    assert "Bearer xox" not in logged
