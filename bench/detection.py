"""Detection latency: from a gateway failing to its alert reaching Slack, the bot beside monit.

In the sandbox (gateways, Cloudflare and Slack stand-ins on 127.0.0.1) a bot watches the fleet,
probing every ``--interval`` seconds; it runs as ``failover-bot serve`` in its own process. When
monit is installed (Debian's package: ``apt-get install monit``) it watches the same gateway in
the same run, every second, its alert an ``exec`` of curl posting to the same Slack stand-in
(channel CMONIT). Each run waits a random delay, makes
``us-east`` answer 503, and times:

- fault -> channel: until the NEW incident's first message (a ``chat.postMessage`` without
  ``thread_ts``) reaches the Slack stand-in, and until monit's alert does;
- probe -> post: from the probe that confirmed the fault (the incident's Detected time) to that
  message, the bot's own pipeline (watch, database, sender, Slack).

Then it heals the region and waits for the incident to close before the next run. It prints the
figures beside their limits (fault -> channel median <= interval/2 + 0.1 s and no slower than
monit's; probe -> post p95 <= 100 ms); it asserts nothing.

Run from the project root::

    .venv/bin/python bench/detection.py [--runs 20] [--interval 1] [--seed 7]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from served import ROOT, free_port, start_bot, stop
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.engine import create_engine, sessionmaker
from bot.db.models import Incident, OutboxPost, TimelineEvent
from bot.sandbox.slack import Recorded
from bot.sandbox.world import CHANNEL, Sandbox
from bot.watch import stored_state

CONFIG = ROOT / "failover.toml"
Sessions = async_sessionmaker[AsyncSession]
REGION = "us-east"
MONIT_CHANNEL = "CMONIT"
POLL = 0.01  # how often this script looks at the Slack stand-in and the database
TIMEOUT = 60.0  # the most any one wait may take before the run counts as failed
PIPELINE_LIMIT = 0.100  # probe -> first post, p95


@dataclass
class Run:
    number: int
    delay: float
    bot: float | None  # fault -> the new incident's message; None: none within TIMEOUT
    pipeline: float | None  # the confirming probe -> that message
    monit: float | None = None  # fault -> monit's alert
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


def first_post(world: Sandbox, channel: str, t0: float) -> Recorded | None:
    """The first message (not a thread reply) posted in ``channel`` after ``t0``."""
    for call in world.slack.calls:
        if (
            call.method == "chat.postMessage"
            and call.at > t0
            and "thread_ts" not in call.args
            and call.args.get("channel") == channel
        ):
            return call
    return None


async def detected_at(db: Sessions) -> float | None:
    """When the newest incident's fault was confirmed (its Detected entry), epoch seconds."""
    async with db() as session:
        entry = await session.scalar(
            select(TimelineEvent)
            .where(TimelineEvent.kind == "Detected")
            .order_by(TimelineEvent.id.desc())
            .limit(1)
        )
    return entry.at.timestamp() if entry is not None else None


async def quiet(db: Sessions) -> bool:
    """Every incident closed and every post owed to the channel sent."""
    async with db() as session:
        open_incidents = await session.scalar(
            select(func.count()).select_from(Incident).where(Incident.closed_at.is_(None))
        )
        pending = await session.scalar(
            select(func.count()).select_from(OutboxPost).where(OutboxPost.sent_at.is_(None))
        )
    return not open_incidents and not pending


class Monit:
    """monit watching the region's gateway every second, alerting through curl."""

    def __init__(self, world: Sandbox, workdir: Path) -> None:
        self.world = world
        self.workdir = workdir
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        gateway = self.world.gateways[REGION]
        port = gateway.url.rsplit(":", 1)[1]
        post = (
            f"/usr/bin/curl -s -o /dev/null -H 'Authorization: Bearer {self.world.bot_token}' "
            f"--data 'channel={MONIT_CHANNEL}&text=%s' {self.world.slack.api_url}chat.postMessage"
        )
        conf = self.workdir / "monitrc"
        conf.write_text(
            "set daemon 1\n"
            f"set pidfile {self.workdir}/monit.pid\n"
            f"set idfile {self.workdir}/monit.id\n"
            f"set statefile {self.workdir}/monit.state\n"
            f"set logfile {self.workdir}/monit.log\n"
            f"check host {REGION} with address 127.0.0.1\n"
            f'  if failed port {port} protocol http request "/health" status = 200 '
            f'with timeout 1 seconds then exec "{post % "down"}"\n'
            f'    else if succeeded then exec "{post % "up"}"\n',
            encoding="utf-8",
        )
        os.chmod(conf, 0o600)  # monit refuses a control file others may read
        self.proc = await asyncio.create_subprocess_exec(
            "monit", "-I", "-c", str(conf), stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()


async def one_run(
    number: int, delay: float, world: Sandbox, db: Sessions, monit: Monit | None
) -> Run:
    await asyncio.sleep(delay)
    t0 = time.time()
    await world.gateways[REGION].set_mode("degraded", check="d1")  # a 503
    found: dict[str, Recorded] = {}

    async def posted() -> bool:
        for who, channel in (("bot", CHANNEL), ("monit", MONIT_CHANNEL)):
            if who not in found and (call := first_post(world, channel, t0)) is not None:
                found[who] = call
        return "bot" in found and (monit is None or "monit" in found)

    if not await wait_for(posted, TIMEOUT):
        missing = "bot" if "bot" not in found else "monit"
        return Run(number, delay, None, None, note=f"no {missing} alert within {TIMEOUT:g} s")
    confirmed = await detected_at(db)
    bot_call = found["bot"]
    pipeline = bot_call.at - confirmed if confirmed is not None else None
    monit_at = found["monit"].at - t0 if "monit" in found else None
    return Run(number, delay, bot_call.at - t0, pipeline, monit_at)


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[math.ceil(0.95 * len(ordered)) - 1]


def report(runs: list[Run], interval: float, monit: bool) -> None:
    print()
    print(f"{'run':>4} {'delay s':>8} {'bot s':>7} {'probe->post ms':>15} {'monit s':>8}")
    for r in runs:
        bot = f"{r.bot:7.3f}" if r.bot is not None else f"{'—':>7}"
        pipe = f"{r.pipeline * 1000:15.1f}" if r.pipeline is not None else f"{'—':>15}"
        mon = f"{r.monit:8.3f}" if r.monit is not None else f"{'—':>8}"
        print(f"{r.number:>4} {r.delay:8.3f} {bot} {pipe} {mon} {r.note}".rstrip())
    bots = [r.bot for r in runs if r.bot is not None]
    pipes = [r.pipeline for r in runs if r.pipeline is not None]
    monits = [r.monit for r in runs if r.monit is not None]
    limit = interval / 2 + 0.1
    print()
    rows: list[tuple[str, str, str]] = [("runs", f"{len(bots)} ok / {len(runs)}", "")]
    if bots:
        median = statistics.median(bots)
        verdict = "within" if median <= limit else "OVER"
        rows += [
            ("fault -> channel, median", f"{median:.3f} s", f"{verdict} limit {limit:.3f} s"),
            ("fault -> channel, p95", f"{p95(bots):.3f} s", ""),
        ]
    if pipes:
        worst = p95(pipes)
        verdict = "within" if worst <= PIPELINE_LIMIT else "OVER"
        rows += [
            ("probe -> post, median", f"{statistics.median(pipes) * 1000:.1f} ms", ""),
            ("probe -> post, p95", f"{worst * 1000:.1f} ms",
             f"{verdict} limit {PIPELINE_LIMIT * 1000:.0f} ms"),
        ]  # fmt: skip
    if monits and bots:
        mine, theirs = statistics.median(bots), statistics.median(monits)
        verdict = "no slower" if mine <= theirs else "SLOWER"
        rows += [
            ("monit fault -> channel, median", f"{theirs:.3f} s", ""),
            ("bot / monit (medians)", f"{mine / theirs:.2f}", f"{verdict} than monit"),
        ]
    elif not monit:
        rows.append(("monit", "not installed", "apt-get install monit to compare"))
    width = max(len(name) for name, _, _ in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>10}  {note}".rstrip())


async def bench(runs: int, interval: float, seed: int) -> list[Run]:
    rng = random.Random(seed)
    step = f"{interval:g}s"
    watch = {
        "probe_interval": step,
        "cloudflare_poll": "2s",
        "settle": "2s",
        "flap_window": "1s",
        "lease_ttl": "6s",
    }
    results: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bench-detection-") as tmp:
        world = Sandbox(CONFIG, tmp, monitor_interval=1.0, propagation=0.5, watch=watch)
        bot: asyncio.subprocess.Process | None = None
        engine = None
        monit = Monit(world, Path(tmp)) if shutil.which("monit") else None
        try:
            await world.start()
            url = f"sqlite+aiosqlite:///{tmp}/bench.db"
            env = serve_environment(world, url)
            bot = await start_bot(env)
            engine = create_engine(url)
            db = sessionmaker(engine)

            async def watching() -> bool:  # the lease taken and a first round stored
                return await stored_state(db) is not None

            if not await wait_for(watching, TIMEOUT):
                print("the bot never took the lease; nothing measured", file=sys.stderr)
                return results
            if monit is not None:
                await monit.start()
            await asyncio.sleep(interval + 2.0)  # a first round: every region healthy
            tools = "the bot and monit" if monit else "the bot (monit is not installed)"
            print(
                f"{runs} runs of {tools}, probe interval {interval:g} s, seed {seed}; the bot "
                "is `failover-bot serve` in its own process",
                flush=True,
            )
            for number in range(1, runs + 1):
                run = await one_run(number, rng.uniform(0.0, interval), world, db, monit)
                await world.gateways[REGION].set_mode("healthy")

                async def settled() -> bool:
                    return await quiet(db)

                closed = await wait_for(settled, TIMEOUT)
                if not closed:
                    run.note = (run.note + "; " if run.note else "") + "incident did not close"
                results.append(run)
                shown = f"{run.bot:.3f} s" if run.bot is not None else "failed"
                print(f"  run {number}: {shown} {run.note}".rstrip(), flush=True)
                if not closed:
                    print("the incident stayed open: stopping early", file=sys.stderr)
                    break
                await asyncio.sleep(1.5)  # monit's recovery alert, before the next fault
            report(results, interval, monit is not None)
        finally:
            if monit is not None:
                await monit.stop()
            await stop(bot)
            if engine is not None:
                await engine.dispose()
            await world.close()
    return results


def serve_environment(world: Sandbox, database_url: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "CLOUDFLARE_"))}
    return clean | world.bot_environment(database_url) | {"PORT": str(free_port())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=20, help="faults to inject (default 20)")
    parser.add_argument(
        "--interval",
        type=float,
        default=1.0,
        help="the watch's probe interval in seconds; faults land at a random point in it "
        "(default 1, as monit's one-second cycle)",
    )
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    args = parser.parse_args()
    if args.runs < 1 or args.interval <= 0:
        parser.error("--runs must be at least 1 and --interval positive")
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    asyncio.run(bench(args.runs, args.interval, args.seed))


if __name__ == "__main__":
    main()
