"""``failover-bot``: serve, migrate, check, discover, relay, sandbox, demo. Wiring only."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path

from aiohttp import web

from bot.assembly import build_bot
from bot.db import schema
from bot.db.engine import create_engine
from bot.errors import ConfigError, ProviderError, SchemaOutOfDate
from bot.fleet import GEO_REGIONS, load_fleet
from bot.logs import configure
from bot.settings import load_settings

log = logging.getLogger("bot")
SECRET_VARIABLES = (
    "SLACK_BOT_TOKEN",
    "SLACK_SIGNING_SECRET",
    "SLACK_APP_TOKEN",
    "CLOUDFLARE_API_TOKEN",
    "CLOUDFLARE_API_KEY",
    "RELAY_TOKEN",
    "DATABASE_URL",  # may carry a password
)


def install_event_loop() -> None:
    """Run on uvloop's event loop where it is installed (the probe loop's sockets take some 40 %
    less CPU on it: bench/monitor.py); on asyncio's own loop otherwise."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def _until_stopped() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def serve(socket_mode: bool) -> None:
    settings = load_settings()
    bot = await build_bot(settings, socket_mode=socket_mode)
    if bot.leadership is None:
        log.warning("SLACK_CHANNEL is not set: serving commands, but no watch and no alerts")
    try:
        await bot.start_watch()
        if socket_mode:
            from bot.slack.socket_mode import socket_mode_handler

            handler = socket_mode_handler(bot.slack, settings)
            await handler.connect_async()  # type: ignore[no-untyped-call]
            log.info("serving over Socket Mode")
            await _until_stopped()
            await handler.close_async()  # type: ignore[no-untyped-call]
        else:
            from bot.slack.server import build_web_app

            runner = web.AppRunner(build_web_app(bot.slack), access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "0.0.0.0", settings.port).start()
            log.info("serving HTTP on port %d: POST /slack/events, GET /healthz", settings.port)
            await _until_stopped()
            await runner.cleanup()
    finally:
        await bot.aclose()


async def migrate(downgrade_to: str | None) -> None:
    settings = load_settings()
    engine = create_engine(settings.database_url)
    try:
        if downgrade_to:
            await schema.downgrade(engine, downgrade_to)
        else:
            await schema.upgrade(engine)
        print(f"database schema at {await schema.current_revision(engine) or 'base'}")
    finally:
        await engine.dispose()


async def check() -> None:
    settings = load_settings()
    fleet = load_fleet(settings.failover_config)
    origins = sum(len(r.origins) for r in fleet.regions.values())
    print(f"{settings.failover_config}: {len(fleet.regions)} regions, {origins} origins: ok")


async def discover(hostname: str | None, out: str, force: bool) -> None:
    import tomli_w

    from bot.cloudflare_api.cloudflare import CloudflareLoadBalancer
    from bot.discovery import plan_from_live

    settings = load_settings()
    if not settings.cloudflare_configured:
        settings.require("cloudflare_api_token")
    target = Path(out)
    if await asyncio.to_thread(target.exists) and not force:
        raise ConfigError(f"{target} exists: choose another --out, or add --force to replace it")
    if hostname is None:
        hostname = load_fleet(settings.failover_config).load_balancer.hostname
    lb = CloudflareLoadBalancer(
        settings.cloudflare_api_token or "",
        settings.cloudflare_account_id or "",
        settings.cloudflare_zone_id or "",
        base_url=settings.cloudflare_base_url,
    )
    try:
        data = plan_from_live(await lb.live_view(hostname))
    finally:
        await lb.aclose()
    header = f"# Discovered from the live account for {hostname}; review the roles and targets.\n"
    await asyncio.to_thread(target.write_text, header + tomli_w.dumps(data), encoding="utf-8")
    print(f"{target}: {len(data['regions'])} regions written from {hostname}")


async def relay(geo: str, port: int) -> None:
    from bot.relay import build_relay_app

    settings = load_settings()
    fleet = load_fleet(settings.failover_config)
    if fleet.public is None:
        raise ConfigError(
            f"{settings.failover_config}: [public] url is missing: the relay fetches it"
        )
    runner = web.AppRunner(build_relay_app(fleet.public, geo.upper(), settings.relay_token))
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()
    log.info("relay for %s on port %d: GET /check fetches %s", geo.upper(), port, fleet.public.url)
    await _until_stopped()
    await runner.cleanup()


async def sandbox(config: str) -> None:
    from bot.sandbox.world import Sandbox

    with tempfile.TemporaryDirectory(prefix="failover-sandbox-") as tmp:
        world = Sandbox(config, tmp)
        await world.start()
        print(json.dumps(world.endpoints()), flush=True)
        try:
            await _until_stopped()
        finally:
            await world.close()


async def demo(config: str, script: str | None) -> int:
    from bot.sandbox.demo import run_demo

    return await run_demo(config, Path(script) if script else None)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="failover-bot", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve Slack: HTTP mode on $PORT, or --socket-mode")
    s.add_argument(
        "--socket-mode",
        action="store_true",
        help="connect over Socket Mode (needs SLACK_APP_TOKEN)",
    )
    m = sub.add_parser("migrate", help="upgrade the database schema (DATABASE_URL)")
    m.add_argument(
        "--downgrade", metavar="REVISION", help="go down to REVISION instead (base: empty)"
    )
    sub.add_parser("check", help="validate the settings and failover.toml, then exit")
    d = sub.add_parser("discover", help="write a failover.toml from the live Cloudflare account")
    d.add_argument("--hostname", help="the load balancer's hostname (default: failover.toml's)")
    d.add_argument("--out", default="failover.discovered.toml", help="where to write it")
    d.add_argument("--force", action="store_true", help="replace --out if it exists")
    r = sub.add_parser("relay", help="serve GET /check: the public hostname fetched from here")
    r.add_argument(
        "--geo", required=True, choices=GEO_REGIONS, type=str.upper, help="where it runs"
    )
    r.add_argument("--port", type=int, default=8080)
    for name, text in (
        ("sandbox", "run the sandbox world alone"),
        ("demo", "the sandbox, the bot and a console"),
    ):
        c = sub.add_parser(name, help=text)
        c.add_argument(
            "--config",
            default="failover.toml",
            help="the topology to mirror (default: failover.toml)",
        )
        if name == "demo":
            c.add_argument(
                "--script", metavar="FILE", help="run the console lines in FILE, then exit"
            )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    env = os.environ
    secrets = [env.get(name) for name in SECRET_VARIABLES]
    quiet = args.command in ("demo", "sandbox")
    level = env.get("LOG_LEVEL", "INFO").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        level = "INFO"  # the settings check says what is wrong with it, in one line
    configure(logging.WARNING if quiet else level, secrets)
    # A line per probe and per API call would drown what matters.
    for noisy in ("httpx", "httpcore", "cloudflare"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # A skipped run of a one-second job only means the last one is still sending.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    if args.command in ("serve", "relay"):
        install_event_loop()
    try:
        if args.command == "serve":
            asyncio.run(serve(args.socket_mode))
        elif args.command == "migrate":
            asyncio.run(migrate(args.downgrade))
        elif args.command == "check":
            asyncio.run(check())
        elif args.command == "discover":
            asyncio.run(discover(args.hostname, args.out, args.force))
        elif args.command == "relay":
            asyncio.run(relay(args.geo, args.port))
        elif args.command == "sandbox":
            asyncio.run(sandbox(args.config))
        elif args.command == "demo":
            return asyncio.run(demo(args.config, args.script))
    except (ConfigError, SchemaOutOfDate, ProviderError) as exc:
        print(f"failover-bot: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
