"""``failover-bot``: serve, migrate, check, discover, notifications, relay, sandbox, demo. Wiring
only."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import sys
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from aiohttp import web

from bot.assembly import build_bot
from bot.db import schema
from bot.db.engine import create_engine, database_error, shown
from bot.errors import ConfigError, ProviderError, SchemaOutOfDate
from bot.fleet import GEO_REGIONS, load_fleet
from bot.logs import configure
from bot.settings import Settings, load_settings

log = logging.getLogger("bot")
SECRET_VARIABLES = (
    "SLACK_BOT_TOKEN",
    "SLACK_SIGNING_SECRET",
    "SLACK_APP_TOKEN",
    "CLOUDFLARE_API_TOKEN",
    "CLOUDFLARE_API_KEY",
    "RELAY_TOKEN",
    "METRICS_TOKEN",
    "CLOUDFLARE_WEBHOOK_SECRET",
    "PAGERDUTY_ROUTING_KEY",
    "PAGERDUTY_ROUTING_KEYS",
    "PAGERDUTY_WEBHOOK_SECRET",
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


def _listen(port: int) -> socket.socket:
    """The HTTP port, bound before the bot is built: a port in use stops the start with one line,
    before the watch could take the lease of an instance that cannot serve."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp's TCPSite does
    try:
        sock.bind(("0.0.0.0", port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"PORT {port} cannot be listened on ({exc.strerror or exc}): stop what uses it, "
            "or set PORT to a free port"
        ) from None
    return sock


async def serve(socket_mode: bool) -> None:
    settings = load_settings()
    listening = None if socket_mode else _listen(settings.port)  # taken before anything starts
    bot = await build_bot(settings, socket_mode=socket_mode)
    if bot.leadership is None:
        log.warning("SLACK_CHANNEL is not set: serving commands, but no watch and no alerts")
    try:
        await bot.verify_slack()
        if socket_mode:
            from bot.slack.socket_mode import socket_mode_handler

            await bot.start_watch()
            handler = socket_mode_handler(bot.slack, settings)
            await handler.connect_async()  # type: ignore[no-untyped-call]
            log.info("serving over Socket Mode")
            await _until_stopped()
            await handler.close_async()  # type: ignore[no-untyped-call]
        else:
            from bot.slack.server import build_web_app, start_metrics

            app = build_web_app(bot.slack, bot.engine, settings=settings, webhooks=bot.webhooks)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            assert listening is not None
            await web.SockSite(runner, listening).start()
            metrics = await start_metrics(settings)  # METRICS_PORT: /metrics on its own port
            await bot.start_watch()
            log.info("serving HTTP on port %d: POST /slack/events, GET /healthz", settings.port)
            await _until_stopped()
            await runner.cleanup()
            if metrics is not None:
                await metrics.cleanup()
    finally:
        await bot.aclose()


async def migrate(downgrade_to: str | None) -> None:
    settings = load_settings()
    engine = create_engine(settings.database_url)
    try:
        if downgrade_to:
            from alembic.script import ScriptDirectory
            from alembic.util import CommandError

            try:
                if downgrade_to.isalnum():  # a revision's name (not -1 or 0003-1): known here?
                    ScriptDirectory.from_config(schema.alembic_config()).get_revisions(downgrade_to)
                await schema.downgrade(engine, downgrade_to)
            except CommandError as exc:  # no such revision, or not below the current one
                raise ConfigError(f"--downgrade {downgrade_to}: {exc}") from None
        else:
            await schema.upgrade(engine)
        print(f"database schema at {await schema.current_revision(engine) or 'base'}")
    finally:
        await engine.dispose()


async def check(socket_mode: bool, online: bool) -> int:
    from bot.readiness import readiness, report

    found = await readiness(socket_mode=socket_mode, online=online)
    print(report(found, online))
    return 2 if any(f.verdict == "FAIL" for f in found) else 0


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


async def notifications_setup(url: str | None, dry_run: bool) -> int:
    from bot.cloudflare_api.notification_setup import run_setup

    settings = load_settings()
    return await run_setup(settings, load_fleet(settings.failover_config), url, dry_run, print)


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


def topology(config: str | None) -> Path:
    """What the sandbox mirrors: --config, FAILOVER_CONFIG, ./failover.toml, else the packaged
    seed's topology (said on stderr: the sandbox's stdout is its endpoints' JSON)."""
    from bot.sandbox.topology import sandbox_topology

    chosen = sandbox_topology(config, os.environ, Path.cwd())
    if chosen.note:
        print(f"failover-bot: {chosen.note}", file=sys.stderr, flush=True)
    return chosen.path


async def sandbox(config: str | None) -> None:
    from bot.sandbox.world import Sandbox

    with tempfile.TemporaryDirectory(prefix="failover-sandbox-") as tmp:
        world = Sandbox(topology(config), tmp)
        await world.start()
        print(json.dumps(world.endpoints()), flush=True)
        try:
            await _until_stopped()
        finally:
            await world.close()


def demo(config: str | None, script: str | None) -> int:
    """The console keeps the main thread (readline, Ctrl-C); its event loop runs beside it."""
    from bot.sandbox.demo import run_demo

    if script is not None and not Path(script).is_file():
        raise ConfigError(f"--script {script}: no such file")
    return run_demo(topology(config), Path(script) if script else None)


DESCRIPTION = """\
A Slack bot for the on-call engineers of a gateway that runs in several regions behind a
Cloudflare load balancer. In Slack, /failover status says how every region stands (the bot's
probes, Cloudflare's view, what users get); check, whatif, drain, restore and drill do the rest.
In the background it watches the regions and posts each incident to a channel."""
EPILOG = """\
To deploy: set the variables (.env.example lists them), then run
  failover-bot migrate && failover-bot check --online && failover-bot serve
To try it without Slack or Cloudflare: failover-bot demo
Each command's --help says what it does and its options."""
SERVE = (
    "Serve the Slack app. Over HTTP (the default) it listens on $PORT for POST /slack/events "
    "(the /failover command, its buttons, the App Home), GET /healthz and GET /metrics. With "
    "SLACK_CHANNEL set it also watches the regions and posts incidents there (the instance "
    "holding the database's lease does). Needs SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET (or "
    "SLACK_APP_TOKEN with --socket-mode) and a migrated database; stops with one line per "
    "problem otherwise."
)
MIGRATE = (
    "Bring the database at DATABASE_URL (default: the SQLite file failover.db) to the schema "
    "this version needs. Run it before the first serve and after each upgrade (the Procfile's "
    "release step does); running it again changes nothing."
)
CHECK = (
    "Check what `serve` needs, without serving: the environment's variables (every one missing "
    "or malformed, each on its line), failover.toml, and the database (reachable and migrated; "
    "nothing is created). With --online, Slack is asked whether SLACK_BOT_TOKEN works, and "
    "Cloudflare whether the API token is active and can read the load balancer named in "
    "failover.toml, its pools, monitor and health events. Exits 0 when ready, 2 otherwise."
)
DISCOVER = (
    "Read the load balancer (by --hostname, default failover.toml's), its pools, origins and "
    "monitor through CLOUDFLARE_API_TOKEN, and write a failover.toml to start from: review its "
    "regions' roles and the targets before using it."
)
RELAY = (
    "A small HTTP service that shows the bot what users in another geo region get: asked GET "
    "/check, it fetches the [public] url of its failover.toml and answers the status, latency "
    "and pool that served. With RELAY_TOKEN set it answers only requests bearing it. List it "
    "under [[relays]] in the bot's failover.toml."
)
SANDBOX = (
    "Start the sandbox world on 127.0.0.1 (a gateway per region, a Cloudflare API stand-in "
    "with its monitor and data plane, relays, a Slack stand-in), print its endpoints as one JSON "
    "line, and run until stopped (Ctrl-C)."
)
DEMO = (
    "Start the sandbox and the bot together, with a console where you type /failover commands "
    "as in Slack, break and heal regions and press buttons (type help there). --script runs a "
    "file of such lines and exits."
)


def _version() -> str:
    try:
        return version("failover-bot")
    except PackageNotFoundError:
        return "(not installed: run `pip install .`)"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="failover-bot",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(title="commands", dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str, description: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=description)

    s = command("serve", "answer Slack: the /failover command, its buttons, and alerts", SERVE)
    s.add_argument(
        "--socket-mode",
        action="store_true",
        help="connect to Slack over Socket Mode instead of listening for HTTP (development "
        "without a public address; needs SLACK_APP_TOKEN, xapp-...)",
    )
    m = command("migrate", "create or upgrade the database schema (DATABASE_URL)", MIGRATE)
    m.add_argument(
        "--downgrade",
        metavar="REVISION",
        help="go down to REVISION instead (base: drop every table), e.g. before running an "
        "older version",
    )
    c = command(
        "check",
        "check that this environment can serve: settings, failover.toml, database",
        CHECK,
    )
    c.add_argument(
        "--online",
        action="store_true",
        help="also ask Slack (auth.test) and Cloudflare (token, load balancer, health events)",
    )
    c.add_argument(
        "--socket-mode",
        action="store_true",
        help="check for `serve --socket-mode`: SLACK_APP_TOKEN instead of SLACK_SIGNING_SECRET",
    )
    d = command("discover", "write a failover.toml from the live Cloudflare account", DISCOVER)
    d.add_argument("--hostname", help="the load balancer's hostname (default: failover.toml's)")
    d.add_argument(
        "--out",
        default="failover.discovered.toml",
        help="where to write it (default: failover.discovered.toml)",
    )
    d.add_argument("--force", action="store_true", help="replace --out if it exists")
    n = command(
        "notifications",
        "Cloudflare's Load Balancing health alerts to this bot",
        "Cloudflare's Load Balancing health alerts, sent to this bot's POST "
        "/cloudflare/notifications: `setup` creates what Cloudflare needs to send them; "
        "`failover-bot check --online` reports whether such a policy exists.",
    )
    nsub = n.add_subparsers(
        dest="action", required=True, metavar="ACTION", help="setup: the destination and policy"
    )
    ns = nsub.add_parser(
        "setup",
        help="create or update the webhook destination and the notification policy",
        description="Create (or update, idempotently) the webhook destination at PUBLIC_URL"
        "/cloudflare/notifications with CLOUDFLARE_WEBHOOK_SECRET, and a Load Balancing health "
        "alert policy for the pools of failover.toml. Without the secret, prints a new one.",
    )
    ns.add_argument(
        "--dry-run", action="store_true", help="print what would change, change nothing"
    )
    ns.add_argument("--url", help="the bot's public base URL (default: PUBLIC_URL)")
    r = command("relay", "see the public hostname from another region: serve GET /check", RELAY)
    r.add_argument(
        "--geo",
        required=True,
        choices=GEO_REGIONS,
        type=str.upper,
        metavar="GEO",
        help=f"the Cloudflare geo region this relay runs in: {', '.join(GEO_REGIONS)}",
    )
    r.add_argument("--port", type=int, default=8080, help="the port to listen on (default 8080)")
    for name, text, description in (
        (
            "sandbox",
            "run the sandbox world alone: gateways, Cloudflare and Slack on loopback",
            SANDBOX,
        ),
        ("demo", "try the bot without Slack or Cloudflare: the sandbox, the bot, a console", DEMO),
    ):
        c = command(name, text, description)
        c.add_argument(
            "--config",
            help="the topology to mirror (default: $FAILOVER_CONFIG, else ./failover.toml, "
            "else the seed's, packaged with the bot)",
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
    # (Alembic's plugin set-up logs seven lines at every migrate.)
    for noisy in ("httpx", "httpcore", "cloudflare", "alembic.runtime.plugins"):
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
            return asyncio.run(check(args.socket_mode, args.online))
        elif args.command == "discover":
            asyncio.run(discover(args.hostname, args.out, args.force))
        elif args.command == "notifications":
            return asyncio.run(notifications_setup(args.url, args.dry_run))
        elif args.command == "relay":
            asyncio.run(relay(args.geo, args.port))
        elif args.command == "sandbox":
            asyncio.run(sandbox(args.config))
        elif args.command == "demo":
            return demo(args.config, args.script)
    except (ConfigError, SchemaOutOfDate, ProviderError) as exc:
        for line in str(exc).splitlines():  # several missing settings: a line each
            print(f"failover-bot: {line}", file=sys.stderr)
        return 2
    except Exception as exc:
        reason = database_error(exc)
        if reason is None:
            raise  # a bug: its traceback is what its fixer needs
        # The database could not be reached, is missing or takes no writes: one line, no
        # traceback, and the URL without its password.
        url = env.get("DATABASE_URL") or Settings.model_fields["database_url"].default
        print(f"failover-bot: DATABASE_URL {shown(url)} cannot be used: {reason}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
