"""Ack and reply latency of ``/failover status`` with many commands in flight at once.

The sandbox (gateways, Cloudflare and Slack stand-ins on 127.0.0.1) runs in one process
(``failover-bot sandbox``), the bot in another as in service (``failover-bot serve``, with its watch
and scheduler), and the Slack users here, in a third. Each round sends ``--inflight``
signed ``/failover status`` commands at once and, for each, times the HTTP answer to the post
(the ack Slack waits for) and the first reply reaching the Slack stand-in. All the commands'
probes share the same three gateways. One command is sent first, alone, to warm up; it is not
counted. At the end it prints p50, p99 and max of both beside their goals (ack p99 <= 0.5 s and
every ack within Slack's 3 s; every reply within the fleet's status deadline, 2.5 s), with the
ratios. It prints figures; it asserts nothing.

Run from the project root::

    .venv/bin/python bench/ack.py [--inflight 200] [--rounds 5] [--wait 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from served import ROOT, free_port, start_bot, stop

from bot.fleet import load_fleet
from bot.sandbox.slack_client import Exchange, SlackUser
from bot.sandbox.world import CHANNEL

CONFIG = ROOT / "failover.toml"
SLACK_ACK_LIMIT = 3.0  # Slack shows the user an error when a slash command is not acked in 3 s
ACK_P99_GOAL = 0.5  # a margin under it that a crowd of 200 users must keep


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
        f"{'':<6} {'n':>4} {'p50 s':>7} {'p99 s':>7} {'max s':>7} {'p99 goal':>9} "
        f"{'p99/goal':>9} {'limit s':>8} {'max/limit':>10} {'within':>10}"
    )
    print(header)
    print("-" * len(header))
    rows = [
        ("ack", acks, ACK_P99_GOAL, SLACK_ACK_LIMIT, "Slack's ack limit"),
        ("reply", replies, deadline, deadline, "the status deadline ([status] deadline)"),
    ]
    for name, values, goal, limit, _ in rows:
        if not values:
            print(f"{name:<6} {0:>4} {'-':>7} {'-':>7} {'-':>7} {goal:9.3f}")
            continue
        p50, p99, top = percentile(values, 0.5), percentile(values, 0.99), max(values)
        within = f"{sum(v <= limit for v in values)}/{len(values)}"
        print(
            f"{name:<6} {len(values):>4} {p50:7.3f} {p99:7.3f} {top:7.3f} {goal:9.3f} "
            f"{p99 / goal:9.2f} {limit:8.3f} {top / limit:10.2f} {within:>10}"
        )
    print()
    for name, _, goal, limit, what in rows:
        print(f"{name}: every one within {limit:g} s, {what}; p99 goal {goal:g} s")
    print("ack: the HTTP answer to the signed post; reply: the first reply at the Slack stand-in")
    print("(both timed from the moment the post is sent)")


def bot_environment(endpoints: dict[str, Any], database_url: str, port: int) -> dict[str, str]:
    """`failover-bot serve`'s environment in the sandbox the other process runs."""
    cf, slack = endpoints["cloudflare"], endpoints["slack"]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "CLOUDFLARE_"))}
    return clean | {
        "SLACK_BOT_TOKEN": slack["bot_token"],
        "SLACK_SIGNING_SECRET": slack["signing_secret"],
        "SLACK_API_URL": slack["api_url"],
        "SLACK_CHANNEL": CHANNEL,
        "CLOUDFLARE_API_TOKEN": cf["api_token"],
        "CLOUDFLARE_ACCOUNT_ID": cf["account_id"],
        "CLOUDFLARE_ZONE_ID": cf["zone_id"],
        "CLOUDFLARE_BASE_URL": cf["base_url"],
        "DATABASE_URL": database_url,
        "FAILOVER_CONFIG": endpoints["config"],
        "PORT": str(port),
    }


async def start_sandbox() -> tuple[asyncio.subprocess.Process, dict[str, Any]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "sandbox", "--config", str(CONFIG), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    return proc, json.loads(line)


async def bench(inflight: int, rounds: int, wait: float) -> list[Sample]:
    samples: list[Sample] = []
    deadline = load_fleet(CONFIG).status.deadline
    sandbox = bot = None
    user: SlackUser | None = None
    with tempfile.TemporaryDirectory(prefix="bench-ack-") as tmp:
        try:
            sandbox, endpoints = await start_sandbox()
            env = bot_environment(endpoints, f"sqlite+aiosqlite:///{tmp}/bench.db", free_port())
            bot = await start_bot(env)
            slack = endpoints["slack"]
            user = SlackUser(
                f"http://127.0.0.1:{env['PORT']}/slack/events",
                slack["url"],
                slack["signing_secret"],
            )
            await asyncio.sleep(2.0)  # the first watch round, as a bot in service has done it

            warm = await user.command("status", wait=wait)
            shown = f"{warm.reply_seconds:.3f} s" if warm.reply_seconds is not None else "none"
            print(
                f"warm-up (not counted): HTTP {warm.status}, ack {warm.ack_seconds:.3f} s, "
                f"reply {shown}",
                flush=True,
            )
            print(
                f"{rounds} rounds of {inflight} concurrent /failover status to `failover-bot "
                "serve` (its own process; the sandbox in another)",
                flush=True,
            )
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
                await asyncio.sleep(1.0)  # rounds apart, as separate bursts of users
            report(samples, inflight, deadline)
        finally:
            if user is not None:
                await user.aclose()
            await stop(bot)
            await stop(sandbox)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--inflight", type=int, default=200, help="commands sent at once per round (default 200)"
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
    asyncio.run(bench(args.inflight, args.rounds, args.wait))


if __name__ == "__main__":
    main()
