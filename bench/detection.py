"""Detection latency: from a region breaking to the incident message reaching Slack.

In the sandbox (gateways, Cloudflare and Slack stand-ins on 127.0.0.1) a bot watches the fleet.
Each run waits a random delay, takes ``us-east`` down, and times how long the incident message
(a ``chat.postMessage`` without ``thread_ts``) takes to reach the Slack stand-in; then it heals
the region and waits for the incident to close and the outbox to drain before the next run.
At the end it prints the median and p95 next to the bound that the probe interval, the
confirmation probes and the alert flush allow. It prints figures; it asserts nothing.

Run from the project root::

    .venv/bin/python bench/detection.py [--runs 10] [--interval 2] [--seed 7]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select

from bot.alerts import POST_SPACING
from bot.assembly import Bot, migrated_bot
from bot.db.engine import sessionmaker
from bot.db.models import Incident, OutboxPost
from bot.sandbox.slack import Recorded
from bot.sandbox.world import CHANNEL, Sandbox

CONFIG = Path(__file__).resolve().parent.parent / "failover.toml"
REGION = "us-east"
FLUSH_PERIOD = 1.0  # the scheduler's "flush" job (bot/scheduler.py) runs every second
POLL = 0.05  # how often this script looks at the Slack stand-in and the database
TIMEOUT = 60.0  # the most any one wait may take before the run counts as failed


@dataclass
class Run:
    number: int
    delay: float
    latency: float | None  # None: no incident message within TIMEOUT
    note: str = ""


async def wait_for(check: Callable[[], Awaitable[bool]], within: float) -> bool:
    """Poll ``check`` until it holds; False if ``within`` seconds pass first."""
    deadline = time.monotonic() + within
    while True:
        if await check():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(POLL)


def incident_message_after(world: Sandbox, t0: float) -> Recorded | None:
    """The first incident message (a channel post, not a thread reply) recorded after ``t0``."""
    for call in world.slack.calls:
        if (
            call.method == "chat.postMessage"
            and call.at > t0
            and "thread_ts" not in call.args
            and call.args.get("channel") == CHANNEL
        ):
            return call
    return None


async def quiet(bot: Bot) -> bool:
    """Every incident closed and every post owed to the channel sent."""
    async with sessionmaker(bot.engine)() as session:
        open_incidents = await session.scalar(
            select(func.count()).select_from(Incident).where(Incident.closed_at.is_(None))
        )
        pending = await session.scalar(
            select(func.count()).select_from(OutboxPost).where(OutboxPost.sent_at.is_(None))
        )
    return not open_incidents and not pending


async def one_run(number: int, delay: float, world: Sandbox) -> Run:
    await asyncio.sleep(delay)
    t0 = time.time()
    await world.gateways[REGION].set_mode("down")
    found: list[Recorded] = []

    async def posted() -> bool:
        call = incident_message_after(world, t0)
        if call is not None:
            found.append(call)
        return call is not None

    if await wait_for(posted, TIMEOUT):
        return Run(number, delay, found[0].at - t0)
    return Run(number, delay, None, f"no incident message within {TIMEOUT:g} s")


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[math.ceil(0.95 * len(ordered)) - 1]


def report(runs: list[Run], bot: Bot) -> None:
    watch, monitor = bot.fleet.watch, bot.fleet.monitor
    interval = watch.probe_interval
    bound = interval + FLUSH_PERIOD + POST_SPACING
    expected = interval / 2 + FLUSH_PERIOD
    print()
    print(f"{'run':>4} {'delay s':>8} {'latency s':>10}")
    for r in runs:
        latency = f"{r.latency:10.3f}" if r.latency is not None else f"{'failed':>10}"
        print(f"{r.number:>4} {r.delay:8.3f} {latency} {r.note}".rstrip())
    ok = [r.latency for r in runs if r.latency is not None]
    print()
    print(
        f"settings: probe_interval {interval:g} s, consecutive_down {monitor.consecutive_down}, "
        f"retries {monitor.retries}, flush every {FLUSH_PERIOD:g} s, "
        f"post spacing {POST_SPACING:g} s"
    )
    print(
        f"bound = probe_interval + confirmation probes (~0 s, re-asked at once) + flush period "
        f"+ post spacing = {interval:g} + 0 + {FLUSH_PERIOD:g} + {POST_SPACING:g} "
        f"= {bound:.3f} s"
    )
    print(f"expected median ≈ probe_interval/2 + ~1 s = {expected:.3f} s")
    print()
    rows: list[tuple[str, str]] = [("runs", f"{len(ok)} ok / {len(runs)}")]
    if ok:
        median = statistics.median(ok)
        rows += [
            ("median", f"{median:.3f} s"),
            ("p95", f"{p95(ok):.3f} s"),
            ("min", f"{min(ok):.3f} s"),
            ("max", f"{max(ok):.3f} s"),
            ("bound", f"{bound:.3f} s"),
            ("expected median", f"{expected:.3f} s"),
            ("median / bound", f"{median / bound:.2f}"),
            ("within bound", f"{sum(v <= bound for v in ok)} of {len(ok)}"),
        ]
    else:
        rows += [("bound", f"{bound:.3f} s"), ("expected median", f"{expected:.3f} s")]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


async def bench(runs: int, interval: float, seed: int) -> list[Run]:
    rng = random.Random(seed)
    step = f"{interval:g}s"
    watch = {
        "probe_interval": step,
        "cloudflare_poll": step,
        "settle": "2s",
        "flap_window": "1s",
        "lease_ttl": "6s",
    }
    results: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bench-detection-") as tmp:
        world = Sandbox(CONFIG, tmp, monitor_interval=1.0, propagation=0.5, watch=watch)
        bot: Bot | None = None
        try:
            await world.start()
            url = f"sqlite+aiosqlite:///{tmp}/bench.db"
            bot = await migrated_bot(world.bot_settings(url), watch=True)
            leadership = bot.leadership
            assert leadership is not None, "the sandbox bot has an alert channel, so it watches"

            async def leading() -> bool:
                return leadership.leading

            if not await wait_for(leading, TIMEOUT):
                print("the bot never took the lease; nothing measured", file=sys.stderr)
                return results
            await asyncio.sleep(interval + 1.0)  # a first round of probes: every region healthy
            print(f"{runs} runs, probe interval {interval:g} s, seed {seed}", flush=True)
            for number in range(1, runs + 1):
                run = await one_run(number, rng.uniform(0.0, interval), world)
                await world.gateways[REGION].set_mode("healthy")

                async def settled(b: Bot = bot) -> bool:
                    return await quiet(b)

                closed = await wait_for(settled, TIMEOUT)
                if not closed:
                    run.note = (run.note + "; " if run.note else "") + "incident did not close"
                results.append(run)
                shown = f"{run.latency:.3f} s" if run.latency is not None else "failed"
                print(f"  run {number}: {shown} {run.note}".rstrip(), flush=True)
                if not closed:
                    print("the incident stayed open: stopping early", file=sys.stderr)
                    break
            report(results, bot)
        finally:
            if bot is not None:
                await bot.aclose()
            await world.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=10, help="faults to inject (default 10)")
    parser.add_argument(
        "--interval",
        type=float,
        default=2.0,
        help="the watch's probe interval in seconds; faults land at a random point in it "
        "(default 2)",
    )
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    args = parser.parse_args()
    if args.runs < 1 or args.interval <= 0:
        parser.error("--runs must be at least 1 and --interval positive")
    # The flush job sleeps out the post spacing, so it overruns its 1 s trigger whenever it owes
    # more than one post, and APScheduler warns on every skipped run; keep the figures readable.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    asyncio.run(bench(args.runs, args.interval, args.seed))


if __name__ == "__main__":
    main()
