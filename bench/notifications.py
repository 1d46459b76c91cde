"""Cloudflare-side detection to channel, with and without Cloudflare's notifications.

In the sandbox, `failover-bot serve` runs in its own process with the default ``cloudflare_poll``
(15 s). Each run waits a random part of a poll interval, takes ``eu-west``'s gateway down, and
times from the moment the Cloudflare stand-in's monitor marks the eu-west pool unhealthy (it
records that moment) to the channel's first message that comes from Cloudflare's side: the one
naming "Failover Triggered" (WEU, EEU, ME, NAF... leave their primary pool). Then it heals the
region and waits for the incident to close.

Two configurations, one after the other in the same run: polling alone, and polling with the
stand-in's Load Balancing health alerts sent to the bot's POST /cloudflare/notifications (set up
by the real `notifications setup`). It prints medians and p95 side by side and their ratio; it
asserts nothing.

Run from the project root::

    .venv/bin/python bench/notifications.py [--runs 5] [--seed 7]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import statistics
import sys
import tempfile
import time

from detection import p95, quiet, serve_environment, wait_for
from served import ROOT, start_bot, stop

from bot.db.engine import create_engine, sessionmaker
from bot.errors import ConfigError
from bot.fleet import load_fleet
from bot.sandbox.slack import Recorded
from bot.sandbox.world import CHANNEL, Sandbox
from bot.watch import stored_state

CONFIG = ROOT / "failover.toml"
REGION = "eu-west"
POLL = load_fleet(CONFIG).watch.cloudflare_poll  # the default the operator runs with
TIMEOUT = 90.0
MARK = "Failover Triggered"


def cloudflare_message(world: Sandbox, after: float) -> Recorded | None:
    """The first message or update in the channel after ``after`` that names a failover."""
    for call in world.slack.calls:
        if call.at <= after or call.args.get("channel") != CHANNEL:
            continue
        if call.method in ("chat.postMessage", "chat.update") and MARK in json.dumps(call.args):
            return call
    return None


async def measure(world: Sandbox, pool: str, t0: float) -> float | None:
    """Cloudflare's pool change (after ``t0``) -> the channel's failover message; None: none."""
    marks: dict[str, float] = {}

    async def seen() -> bool:
        if "cf" not in marks:
            for c in world.cloudflare.alerting.changes:
                if c.at > t0 and c.pool_id == pool and c.origin_name is None:
                    marks["cf"] = c.at
                    break
        call = cloudflare_message(world, t0)
        if call is not None:
            marks["msg"] = call.at
        return "cf" in marks and "msg" in marks

    return marks["msg"] - marks["cf"] if await wait_for(seen, TIMEOUT) else None


async def one_config(notified: bool, runs: int, rng: random.Random) -> list[float | None]:
    watch = {"cloudflare_poll": f"{POLL:g}s", "settle": "2s", "flap_window": "1s"}
    results: list[float | None] = []
    label = "with notifications" if notified else "polling alone"
    with tempfile.TemporaryDirectory(prefix="bench-notifications-") as tmp:
        world = Sandbox(
            CONFIG, tmp, monitor_interval=1.0, propagation=0.5, watch=watch, notifications=notified
        )
        bot = engine = None
        try:
            await world.start()
            url = f"sqlite+aiosqlite:///{tmp}/bench.db"
            env = serve_environment(world, url)
            bot = await start_bot(env)
            engine = create_engine(url)
            db = sessionmaker(engine)

            async def watching() -> bool:
                return await stored_state(db) is not None

            if not await wait_for(watching, TIMEOUT):
                print(f"{label}: the bot never took the lease", file=sys.stderr)
                return results
            if notified:
                try:
                    await world.notify_bot(f"http://127.0.0.1:{env['PORT']}", url)
                except ConfigError as exc:
                    print(f"{label}: {exc}; nothing measured", file=sys.stderr)
                    return results
            pool = next(
                pid
                for pid, p in world.cloudflare.pools.items()
                if p["name"] == world.base.regions[REGION].pool
            )
            await asyncio.sleep(3.0)  # a first round: every region healthy
            for number in range(1, runs + 1):
                await asyncio.sleep(rng.uniform(0.0, POLL))
                t0 = time.time()
                await world.gateways[REGION].set_mode("down")
                took = await measure(world, pool, t0)
                results.append(took)
                shown = f"{took:.3f} s" if took is not None else "no message"
                print(f"  {label}, run {number}: {shown}", flush=True)
                await world.gateways[REGION].set_mode("healthy")

                async def closed() -> bool:
                    return await quiet(db)

                if not await wait_for(closed, TIMEOUT):
                    print(f"{label}: the incident stayed open: stopping early", file=sys.stderr)
                    break
                await asyncio.sleep(2.0)
        finally:
            await stop(bot)
            if engine is not None:
                await engine.dispose()
            await world.close()
    return results


def summary(values: list[float | None]) -> tuple[str, str, float | None]:
    ok = [v for v in values if v is not None]
    if not ok:
        return "—", "—", None
    median = statistics.median(ok)
    return f"{median:.3f} s", f"{p95(ok):.3f} s", median


async def bench(runs: int, seed: int) -> None:
    rng = random.Random(seed)
    print(
        f"{runs} runs each; cloudflare_poll {POLL:g} s; region {REGION} taken down; "
        "Cloudflare's pool change -> the channel's Failover Triggered",
        flush=True,
    )
    polled = await one_config(False, runs, rng)
    notified = await one_config(True, runs, rng)
    rows = []
    for name, values in (("polling alone", polled), ("with notifications", notified)):
        median, worst, _ = summary(values)
        rows.append((name, f"{sum(v is not None for v in values)}/{len(values)}", median, worst))
    print()
    print(f"{'':20} {'ok':>6} {'median':>10} {'p95':>10}")
    for name, ok, median, worst in rows:
        print(f"{name:20} {ok:>6} {median:>10} {worst:>10}")
    a, b = summary(polled)[2], summary(notified)[2]
    if a is not None and b is not None and b > 0:
        print(f"polling / notifications (medians): {a / b:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5, help="faults per configuration (default 5)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    asyncio.run(bench(args.runs, args.seed))


if __name__ == "__main__":
    main()
