"""``failover-bot``: serve, migrate, check, sandbox, demo. Wiring only."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import tempfile
from pathlib import Path

from aiohttp import web

from bot.assembly import build_bot
from bot.db import schema
from bot.db.engine import create_engine
from bot.errors import ConfigError, SchemaOutOfDate
from bot.fleet import load_fleet
from bot.settings import load_settings

log = logging.getLogger("bot")


async def _until_stopped() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def serve(socket_mode: bool) -> None:
    settings = load_settings()
    bot = await build_bot(settings, socket_mode=socket_mode)
    try:
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
    logging.basicConfig(
        level=logging.WARNING if args.command in ("demo", "sandbox") else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "serve":
            asyncio.run(serve(args.socket_mode))
        elif args.command == "migrate":
            asyncio.run(migrate(args.downgrade))
        elif args.command == "check":
            asyncio.run(check())
        elif args.command == "sandbox":
            asyncio.run(sandbox(args.config))
        elif args.command == "demo":
            return asyncio.run(demo(args.config, args.script))
    except (ConfigError, SchemaOutOfDate) as exc:
        print(f"failover-bot: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
