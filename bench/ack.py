"""Ack and reply latency of ``/failover status`` with many commands in flight at once.

In the sandbox (gateways, Cloudflare and Slack stand-ins on 127.0.0.1) a bot is served over HTTP,
as the ``served`` test fixture builds it (no background watch). Each round sends ``--inflight``
signed ``/failover status`` commands at once and, for each, times the HTTP answer to the post
(the ack Slack waits for) and the first reply reaching the Slack stand-in. All the commands'
probes share the same three gateways. One command is sent first, alone, to warm up; it is not
counted. At the end it prints p50, p99 and max of both next to Slack's 3 s ack limit and the
fleet's status deadline (2.5 s), with p99 / limit. It prints figures; it asserts nothing.

Run from the project root::

    .venv/bin/python bench/ack.py [--inflight 50] [--rounds 5] [--wait 10]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bot.assembly import Bot, migrated_bot
from bot.sandbox.servers import LocalServer
from bot.sandbox.slack_client import Exchange, SlackUser
from bot.sandbox.world import Sandbox
from bot.slack.server import build_web_app

CONFIG = Path(__file__).resolve().parent.parent / "failover.toml"
SLACK_ACK_LIMIT = 3.0  # Slack shows the user an error when a slash command is not acked in 3 s


@dataclass
class Sample:
    round: int
    status: int
    ack: float
    reply: float | None  # None: no reply within --wait
    verdict: str  # the first reply's text ("" without one)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def sample(number: int, exchange: Exchange) -> Sample:
    text = str(exchange.replies[0].get("text", "")) if exchange.replies else ""
    return Sample(number, exchange.status, exchange.ack_seconds, exchange.reply_seconds, text)


def report(samples: list[Sample], inflight: int, deadline: float) -> None:
    acks = [s.ack for s in samples if s.status == 200]
    replies = [s.reply for s in samples if s.reply is not None]
    rejected = sum(s.status != 200 for s in samples)
    silent = sum(s.status == 200 and s.reply is None for s in samples)
    healthy = sum(s.verdict.endswith("all healthy") for s in samples)
    seen_ok = {s.verdict for s in samples if s.verdict.endswith("all healthy")}
    print()
    print(
        f"{len(samples)} commands, {inflight} in flight at a time: "
        f"{len(acks)} acked with HTTP 200, {rejected} refused, {len(replies)} replied, "
        f"{silent} acked but got no reply"
    )
    print(
        f"replies whose verdict is 'all healthy': {healthy} of {len(replies)} "
        "(a probe or public check not answered in time changes the verdict)"
    )
    others = dict.fromkeys(s.verdict for s in samples if s.verdict and s.verdict not in seen_ok)
    for verdict in list(others)[:3]:
        print(f"  e.g. {verdict[:160]}")
    print()
    header = (
        f"{'':<6} {'n':>4} {'p50 s':>7} {'p99 s':>7} {'max s':>7} {'limit s':>8} "
        f"{'p99/limit':>10} {'max/limit':>10} {'within':>10}"
    )
    print(header)
    print("-" * len(header))
    rows = [
        ("ack", acks, SLACK_ACK_LIMIT, "Slack's ack limit"),
        ("reply", replies, deadline, "the status deadline ([status] deadline)"),
    ]
    for name, values, limit, _ in rows:
        if not values:
            print(f"{name:<6} {0:>4} {'-':>7} {'-':>7} {'-':>7} {limit:8.3f}")
            continue
        p50, p99, top = percentile(values, 0.5), percentile(values, 0.99), max(values)
        within = f"{sum(v <= limit for v in values)}/{len(values)}"
        print(
            f"{name:<6} {len(values):>4} {p50:7.3f} {p99:7.3f} {top:7.3f} {limit:8.3f} "
            f"{p99 / limit:10.2f} {top / limit:10.2f} {within:>10}"
        )
    print()
    for name, _, limit, what in rows:
        print(f"{name} limit: {limit:g} s, {what}")
    print("ack: the HTTP answer to the signed post; reply: the first reply at the Slack stand-in")
    print("(both timed from the moment the post is sent)")


async def bench(inflight: int, rounds: int, wait: float) -> list[Sample]:
    samples: list[Sample] = []
    with tempfile.TemporaryDirectory(prefix="bench-ack-") as tmp:
        world = Sandbox(CONFIG, tmp, monitor_interval=1.0, propagation=0.5)
        bot: Bot | None = None
        server: LocalServer | None = None
        user: SlackUser | None = None
        try:
            await world.start()
            url = f"sqlite+aiosqlite:///{tmp}/bench.db"
            bot = await migrated_bot(world.bot_settings(url))
            server = LocalServer(build_web_app(bot.slack))
            await server.start()
            user = SlackUser(f"{server.url}/slack/events", world.slack.url, world.signing_secret)
            deadline = bot.fleet.status.deadline

            warm = await user.command("status", wait=wait)
            shown = f"{warm.reply_seconds:.3f} s" if warm.reply_seconds is not None else "none"
            print(
                f"warm-up (not counted): HTTP {warm.status}, ack {warm.ack_seconds:.3f} s, "
                f"reply {shown}",
                flush=True,
            )
            print(f"{rounds} rounds of {inflight} concurrent /failover status", flush=True)
            for number in range(1, rounds + 1):
                started = time.perf_counter()
                exchanges = await asyncio.gather(
                    *(user.command("status", wait=wait) for _ in range(inflight))
                )
                took = time.perf_counter() - started
                got = [sample(number, e) for e in exchanges]
                samples += got
                acks = [s.ack for s in got]
                replies = [s.reply for s in got if s.reply is not None]
                reply_text = (
                    f"reply p50 {percentile(replies, 0.5):.3f} s max {max(replies):.3f} s"
                    if replies
                    else "no replies"
                )
                print(
                    f"  round {number}: ack p50 {percentile(acks, 0.5):.3f} s "
                    f"max {max(acks):.3f} s, {reply_text} "
                    f"({len(replies)}/{len(got)} replied, round took {took:.2f} s)",
                    flush=True,
                )
            report(samples, inflight, deadline)
        finally:
            if user is not None:
                await user.aclose()
            if server is not None:
                await server.close()
            if bot is not None:
                await bot.aclose()
            await world.close()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--inflight", type=int, default=50, help="commands sent at once per round (default 50)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    parser.add_argument(
        "--wait",
        type=float,
        default=10.0,
        help="seconds each command waits for its reply before it counts as none (default 10)",
    )
    args = parser.parse_args()
    if args.inflight < 1 or args.rounds < 1 or args.wait <= 0:
        parser.error("--inflight and --rounds must be at least 1 and --wait positive")
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    asyncio.run(bench(args.inflight, args.rounds, args.wait))


if __name__ == "__main__":
    main()
