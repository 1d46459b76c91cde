"""`failover-bot notifications setup` and the check's notifications line, against the stand-in."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from bot.__main__ import main
from bot.cloudflare_api.notification_setup import run_setup
from bot.fleet import load_fleet
from bot.readiness import _cloudflare, _secret
from bot.sandbox.servers import LocalServer
from bot.sandbox.world import Sandbox
from bot.settings import Settings

SECRET = "the-bots-webhook-secret-of-41-characters"


ROTATED = "a-rotated-secret-also-over-32-characters"


class BotEndpoint:
    """What the bot's POST /cloudflare/notifications must do for setup: answer the test (2xx)
    when the secret is the bot's; record everything."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.got: list[tuple[str | None, dict[str, Any]]] = []
        app = web.Application()
        app.router.add_post("/cloudflare/notifications", self._post)
        self.server = LocalServer(app)

    async def _post(self, request: web.Request) -> web.Response:
        given = request.headers.get("cf-webhook-auth")
        self.got.append((given, await request.json()))
        return web.Response(status=200 if given == self.secret else 401)


@pytest.fixture
async def endpoint() -> AsyncIterator[BotEndpoint]:
    e = BotEndpoint(SECRET)
    await e.server.start()
    yield e
    await e.server.close()


def settings_for(world: Sandbox, tmp_path: Path, **changes: Any) -> Settings:
    base = world.bot_settings(f"sqlite+aiosqlite:///{tmp_path}/bot.db")
    return base.model_copy(update={"cloudflare_webhook_secret": SECRET} | changes)


async def setup(settings: Settings, world: Sandbox, dry_run: bool = False) -> tuple[int, str]:
    lines: list[str] = []
    code = await run_setup(settings, load_fleet(world.config_path), None, dry_run, lines.append)
    return code, "\n".join(lines)


def writes(world: Sandbox) -> list[tuple[str, str]]:
    return [(m, p) for m, p in world.cloudflare.requests if "/alerting/" in p and m != "GET"]


async def test_creates_once_and_a_second_run_changes_nothing(
    world: Sandbox, endpoint: BotEndpoint, tmp_path: Path
) -> None:
    settings = settings_for(world, tmp_path, public_url=endpoint.server.url)
    code, said = await setup(settings, world)
    assert code == 0, said
    assert "create the webhook destination" in said and "create the notification policy" in said
    alerting = world.cloudflare.alerting
    (hook,) = alerting.webhooks.values()
    assert hook["url"] == f"{endpoint.server.url}/cloudflare/notifications"
    assert alerting.secrets[hook["id"]] == SECRET
    (policy,) = alerting.policies.values()
    fleet_pools = {r.pool for r in world.base.regions.values()}
    names = {world.cloudflare.pools[i]["name"] for i in policy["filters"]["pool_id"]}
    assert names == fleet_pools
    assert policy["alert_type"] == "load_balancing_health_alert" and policy["enabled"] is True
    assert policy["mechanisms"] == {"webhooks": [{"id": hook["id"]}]}
    assert sorted(policy["filters"]["event_source"]) == ["origin", "pool"]
    made = len(writes(world))
    code, said = await setup(settings, world)
    assert code == 0 and "nothing to change" in said, said
    assert said.splitlines()[-1].startswith("`failover-bot check --online` reports whether")
    assert len(writes(world)) == made  # no write the second time


async def test_dry_run_writes_nothing(
    world: Sandbox, endpoint: BotEndpoint, tmp_path: Path
) -> None:
    settings = settings_for(world, tmp_path, public_url=endpoint.server.url)
    code, said = await setup(settings, world, dry_run=True)
    assert code == 0
    assert "would create the webhook destination" in said
    assert "would create the notification policy" in said and "none was" in said
    assert writes(world) == [] and endpoint.got == []


async def test_without_a_secret_one_is_printed_and_nothing_created(
    world: Sandbox, endpoint: BotEndpoint, tmp_path: Path
) -> None:
    settings = settings_for(
        world, tmp_path, public_url=endpoint.server.url, cloudflare_webhook_secret=None
    )
    code, said = await setup(settings, world)
    assert code == 2
    line = next(ln for ln in said.splitlines() if "CLOUDFLARE_WEBHOOK_SECRET=" in ln)
    assert len(line.split("=", 1)[1]) >= 40  # token_urlsafe(32)
    assert "run `failover-bot notifications setup` again" in said
    assert not [p for _, p in world.cloudflare.requests if "/alerting/" in p]


async def test_a_short_secret_is_refused_and_the_check_says_so(
    world: Sandbox, endpoint: BotEndpoint, tmp_path: Path
) -> None:
    # Its fingerprint is in the destination's name: a short secret could be guessed from it.
    weak = "hunter2-but-longer-than-that"  # 28 characters
    endpoint.secret = weak
    settings = settings_for(
        world, tmp_path, public_url=endpoint.server.url, cloudflare_webhook_secret=weak
    )
    code, said = await setup(settings, world)
    assert code == 2 and len(said.splitlines()) == 1, said
    assert said.startswith("CLOUDFLARE_WEBHOOK_SECRET is 28 characters: at least 32 are needed")
    assert said.endswith("Nothing was created.")
    assert not [p for _, p in world.cloudflare.requests if "/alerting/" in p]
    line = _secret(settings)  # `failover-bot check`'s line about the secret
    assert line.verdict == "note" and "at least 32" in line.text and "refuses it" in line.text


async def test_a_new_secret_updates_the_destination(
    world: Sandbox, endpoint: BotEndpoint, tmp_path: Path
) -> None:
    settings = settings_for(world, tmp_path, public_url=endpoint.server.url)
    assert (await setup(settings, world))[0] == 0
    endpoint.secret = ROTATED
    rotated = settings.model_copy(update={"cloudflare_webhook_secret": ROTATED})
    code, said = await setup(rotated, world)
    assert code == 0 and "its secret changed" in said, said
    assert "notification policy" in said and "unchanged" in said
    (hook,) = world.cloudflare.alerting.webhooks.values()
    assert world.cloudflare.alerting.secrets[hook["id"]] == ROTATED


async def test_failures_are_one_line_and_exit_2(
    world: Sandbox, endpoint: BotEndpoint, tmp_path: Path
) -> None:
    settings = settings_for(world, tmp_path, public_url=endpoint.server.url)
    async with httpx.AsyncClient() as http:
        await http.post(
            f"{world.cloudflare.server.url}/_sandbox/faults", json={"kind": "forbidden"}
        )
    code, said = await setup(settings, world)
    assert code == 2 and len(said.splitlines()) == 1 and "lacks" in said, said
    gone = settings.model_copy(update={"cloudflare_base_url": "http://127.0.0.1:9/client/v4"})
    code, said = await setup(gone, world)
    assert code == 2 and "cannot reach Cloudflare" in said and len(said.splitlines()) == 1
    no_url = settings.model_copy(update={"public_url": None})
    code, said = await setup(no_url, world)
    assert code == 2 and said.startswith("PUBLIC_URL is not set")
    for wrong in ("ftp://bot.example.com", "http://bot.example.com", "bot.example.com"):
        code, said = await setup(settings.model_copy(update={"public_url": wrong}), world)
        assert code == 2 and "is not the bot's public https base URL" in said, wrong
    assert writes(world) == []
    # The bot does not know the secret yet: Cloudflare's test is refused, nothing is created.
    endpoint.secret = "another"
    async with httpx.AsyncClient() as http:
        await http.post(f"{world.cloudflare.server.url}/_sandbox/faults", json={"kind": "none"})
    code, said = await setup(settings, world)
    assert code == 2 and "HTTP 401" in said and world.cloudflare.alerting.webhooks == {}


async def test_the_command_line(
    world: Sandbox,
    endpoint: BotEndpoint,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in world.bot_environment(f"sqlite+aiosqlite:///{tmp_path}/b.db").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CLOUDFLARE_WEBHOOK_SECRET", SECRET)
    # main() runs its own event loop: in a thread, while this loop serves the sandbox.
    code = await asyncio.to_thread(
        main, ["notifications", "setup", "--dry-run", "--url", endpoint.server.url]
    )
    assert code == 0
    assert "would create the notification policy" in capsys.readouterr().out
    assert writes(world) == []


async def test_the_check_says_whether_notifications_reach_the_bot(
    world: Sandbox, endpoint: BotEndpoint, tmp_path: Path
) -> None:
    settings = settings_for(world, tmp_path, public_url=endpoint.server.url)
    fleet = load_fleet(world.config_path)

    async def line() -> tuple[str, str]:
        found = await _cloudflare(settings, fleet)
        f = next(f for f in found if f.text.startswith("Cloudflare notifications"))
        return f.verdict, f.text

    verdict, text = await line()
    assert verdict == "note" and "failover-bot notifications setup" in text
    assert (await setup(settings, world))[0] == 0
    verdict, text = await line()
    assert verdict == "ok" and "/cloudflare/notifications" in text, text
    # A policy narrowed to one pool no longer covers the fleet: the check names what is missing.
    (policy,) = world.cloudflare.alerting.policies.values()
    policy["filters"]["pool_id"] = policy["filters"]["pool_id"][:1]
    verdict, text = await line()
    assert verdict == "note" and "leaves out pool" in text, text


async def test_the_sandbox_bot_is_set_up_through_the_real_setup(
    tmp_path: Path, endpoint: BotEndpoint
) -> None:
    world = Sandbox(Path(__file__).parents[2] / "failover.toml", tmp_path, notifications=True)
    await world.start()
    try:
        assert world.webhook_secret
        endpoint.secret = world.webhook_secret
        env = world.bot_environment("sqlite+aiosqlite:///x.db")
        assert env["CLOUDFLARE_WEBHOOK_SECRET"] == world.webhook_secret
        lines = await world.notify_bot(endpoint.server.url, "sqlite+aiosqlite:///x.db")
        assert any("notifies" in ln for ln in lines)
        await world.gateways["eu-west"].set_mode("down")
        deadline = time.monotonic() + 20
        while not any("alert_type" in body for _, body in endpoint.got):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        assert all(secret == world.webhook_secret for secret, _ in endpoint.got)
    finally:
        await world.close()
