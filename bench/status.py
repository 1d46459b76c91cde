"""``/failover status`` latency: the sandbox's 3 regions over Slack, and 100 origins directly.

(a) In the sandbox (gateways, Cloudflare and Slack stand-ins on 127.0.0.1) a bot is served over
HTTP, as the ``served`` test fixture builds it (no background watch), and ``--commands`` signed
``/failover status`` commands are sent one after another; each is timed until its first reply
reaches the Slack stand-in.

(b) ``--origins`` extra gateways (``gw-000``, ...) are started and the sandbox fleet is rebuilt
with its regions' origins replaced by them (about a third each). ``--slow`` of them answer only
after ``--delay`` seconds, longer than the status budget. ``StatusService.check()`` is then
called ``--checks`` times directly (the bot's probes only: no Cloudflare, no public hostname),
each time timing ``FleetStatus.elapsed``, the slowest probe that answered, and how many origins
are shown as "no answer".

Both are printed next to the fleet's status deadline (``[status] deadline``, 2.5 s), with
ratios. It prints figures; it asserts nothing.

Run from the project root::

    .venv/bin/python bench/status.py [--commands 20] [--origins 100] [--slow 5] [--delay 4]
        [--checks 10]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from bot.assembly import Bot, migrated_bot
from bot.fleet import Fleet, Origin, load_fleet
from bot.health import Prober
from bot.observations import Outcome
from bot.sandbox.gateways import Gateway
from bot.sandbox.servers import LocalServer
from bot.sandbox.slack_client import SlackUser
from bot.sandbox.world import Sandbox
from bot.slack.server import build_web_app
from bot.status import RENDER_MARGIN, StatusService

CONFIG = Path(__file__).resolve().parent.parent / "failover.toml"
WAIT = 10.0  # seconds a command waits for its reply before it counts as none


@dataclass
class Check:
    number: int
    elapsed: float
    slowest: float | None  # the slowest answered probe; None when none answered
    no_answer: int
    healthy: int
    origins: int


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def table(rows: list[tuple[str, list[float], float]]) -> None:
    """One line per measure: p50, p95, max, the limit and the ratios to it."""
    header = (
        f"{'':<26} {'n':>4} {'p50 s':>7} {'p95 s':>7} {'max s':>7} {'limit s':>8} "
        f"{'p95/limit':>10} {'max/limit':>10} {'within':>8}"
    )
    print(header)
    print("-" * len(header))
    for name, values, limit in rows:
        if not values:
            print(f"{name:<26} {0:>4} {'-':>7} {'-':>7} {'-':>7} {limit:8.3f}")
            continue
        p50, p95, top = percentile(values, 0.5), percentile(values, 0.95), max(values)
        within = f"{sum(v <= limit for v in values)}/{len(values)}"
        print(
            f"{name:<26} {len(values):>4} {p50:7.3f} {p95:7.3f} {top:7.3f} {limit:8.3f} "
            f"{p95 / limit:10.2f} {top / limit:10.2f} {within:>8}"
        )


async def over_slack(world: Sandbox, tmp: str, commands: int) -> tuple[list[float], int, float]:
    """(a): reply latencies of sequential commands, how many got no reply, and the deadline."""
    url = f"sqlite+aiosqlite:///{tmp}/bench.db"
    bot: Bot | None = None
    server: LocalServer | None = None
    user: SlackUser | None = None
    replies: list[float] = []
    missing = 0
    try:
        bot = await migrated_bot(world.bot_settings(url))
        server = LocalServer(
            build_web_app(bot.slack, bot.engine, settings=bot.settings, webhooks=bot.webhooks)
        )
        await server.start()
        user = SlackUser(f"{server.url}/slack/events", world.slack.url, world.signing_secret)
        print(f"(a) {commands} /failover status over Slack, one after another", flush=True)
        for number in range(1, commands + 1):
            exchange = await user.command("status", wait=WAIT)
            verdict = str(exchange.replies[0].get("text", "")) if exchange.replies else ""
            if exchange.reply_seconds is None:
                missing += 1
                print(f"  {number:>3}: HTTP {exchange.status}, no reply within {WAIT:g} s")
            else:
                replies.append(exchange.reply_seconds)
                print(
                    f"  {number:>3}: ack {exchange.ack_seconds:.3f} s, "
                    f"reply {exchange.reply_seconds:.3f} s  {verdict[:70]}",
                    flush=True,
                )
        return replies, missing, bot.fleet.status.deadline
    finally:
        if user is not None:
            await user.aclose()
        if server is not None:
            await server.close()
        if bot is not None:
            await bot.aclose()


def big_fleet(base: Fleet, gateways: list[Gateway]) -> Fleet:
    """``base`` with its regions' origins replaced by ``gateways``, split as evenly as can be."""
    names = list(base.regions)
    share, extra = divmod(len(gateways), len(names))
    regions = {}
    start = 0
    for i, name in enumerate(names):
        count = share + (1 if i < extra else 0)
        origins = [Origin(name=gw.region, url=gw.url) for gw in gateways[start : start + count]]
        start += count
        region = base.regions[name]
        regions[name] = replace(
            region, origins=origins, minimum_origins=min(region.minimum_origins, count)
        )
    return base.model_copy(update={"regions": regions})


async def many_origins(
    world: Sandbox, origins: int, slow: int, delay: float, checks: int
) -> tuple[list[Check], float]:
    """(b): ``checks`` direct status checks of a fleet of ``origins`` gateways, some slow."""
    gateways = [Gateway(f"gw-{i:03d}") for i in range(origins)]
    prober: Prober | None = None
    results: list[Check] = []
    try:
        for gw in gateways:
            await gw.start()
        # Spread the slow ones over the fleet, so that every region gets its share.
        step = origins / slow if slow else 0.0
        slow_ones = [gateways[int(i * step)] for i in range(slow)]
        for gw in slow_ones:
            await gw.set_mode("slow", delay=delay)
        fleet = big_fleet(load_fleet(world.config_path), gateways)
        prober = Prober(fleet.monitor)
        service = StatusService(fleet, prober)
        sizes = ", ".join(f"{r.name} {len(r.origins)}" for r in fleet.regions.values())
        print()
        print(
            f"(b) {checks} status checks of {len(fleet.origins)} origins ({sizes}); "
            f"{slow} slow ({', '.join(gw.region for gw in slow_ones) or 'none'}: "
            f"{delay:g} s); probe budget {fleet.status.deadline - RENDER_MARGIN:g} s, "
            f"monitor timeout {fleet.monitor.timeout:g} s",
            flush=True,
        )
        for number in range(1, checks + 1):
            status = await service.check()
            probes = [p for r in status.regions for p in r.probes]
            answered = [p.latency for p in probes if p.answered and p.latency is not None]
            check = Check(
                number=number,
                elapsed=status.elapsed,
                slowest=max(answered) if answered else None,
                no_answer=sum(p.outcome is Outcome.NO_ANSWER for p in probes),
                healthy=sum(p.healthy for p in probes),
                origins=len(probes),
            )
            results.append(check)
            slowest = f"{check.slowest:.3f} s" if check.slowest is not None else "none"
            print(
                f"  {number:>3}: elapsed {check.elapsed:.3f} s, slowest answered probe "
                f"{slowest}, {check.healthy} healthy, {check.no_answer} no answer "
                f"(of {check.origins})",
                flush=True,
            )
        return results, fleet.status.deadline
    finally:
        if prober is not None:
            await prober.aclose()
        for gw in gateways:
            await gw.close()


def report(
    replies: list[float],
    missing: int,
    checks: list[Check],
    deadline: float,
    origins: int,
    slow: int,
) -> None:
    print()
    budget = deadline - RENDER_MARGIN
    print(
        f"limit: the status deadline ([status] deadline) {deadline:g} s; probes are cut off at "
        f"deadline - render margin = {deadline:g} - {RENDER_MARGIN:g} = {budget:g} s"
    )
    print()
    slowest = [c.slowest for c in checks if c.slowest is not None]
    table(
        [
            ("(a) 3 regions, reply", replies, deadline),
            (f"(b) {origins} origins, elapsed", [c.elapsed for c in checks], deadline),
            ("(b) slowest answered", slowest, deadline),
        ]
    )
    print()
    if missing:
        print(f"(a) {missing} command(s) got no reply within {WAIT:g} s (not in the figures)")
    if checks:
        shown = [c.no_answer for c in checks]
        print(
            f"(b) origins shown as 'no answer' per check: min {min(shown)}, max {max(shown)} "
            f"(of {checks[0].origins}; {slow} slow by design)"
        )
    print("(a) reply: from the signed post to the first reply at the Slack stand-in")
    print("(b) elapsed: FleetStatus.elapsed; slowest answered: the largest probe latency among")
    print("    origins that answered (the decisive attempt), per check")


async def bench(commands: int, origins: int, slow: int, delay: float, checks: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-status-") as tmp:
        world = Sandbox(CONFIG, tmp, monitor_interval=1.0, propagation=0.5)
        try:
            await world.start()
            replies, missing, deadline = await over_slack(world, tmp, commands)
            results, deadline = await many_origins(world, origins, slow, delay, checks)
            report(replies, missing, results, deadline, origins, slow)
        finally:
            await world.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--commands", type=int, default=20, help="(a) commands sent over Slack (default 20)"
    )
    parser.add_argument("--origins", type=int, default=100, help="(b) origins (default 100)")
    parser.add_argument(
        "--slow", type=int, default=5, help="(b) origins that answer late (default 5)"
    )
    parser.add_argument(
        "--delay", type=float, default=4.0, help="(b) how late, in seconds (default 4)"
    )
    parser.add_argument(
        "--checks", type=int, default=10, help="(b) status checks to time (default 10)"
    )
    args = parser.parse_args()
    if args.commands < 1 or args.checks < 1 or args.delay <= 0:
        parser.error("--commands and --checks must be at least 1 and --delay positive")
    if args.origins < 3 or not 0 <= args.slow <= args.origins:
        parser.error("--origins must be at least 3 (one per region), --slow 0 to --origins")
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    asyncio.run(bench(args.commands, args.origins, args.slow, args.delay, args.checks))


if __name__ == "__main__":
    main()
