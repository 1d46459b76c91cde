"""The served bot's probing at scale: CPU, probes/s, slots, alarms, memory and start-up.

Each run starts ``failover-bot serve`` as a real process (watch, scheduler, SQLite database,
Bolt's HTTP app, the Slack stand-in of bot/sandbox for its Web API, no Cloudflare) against a
generated failover.toml of N origins probed every second, with 3 pools or one pool per origin.
The origins are a fleet of ``/health`` endpoints, one port each, served by a separate process
(``--fleet-procs`` of them) that answers the gateway's compact JSON and either CLOSES the
connection after each answer (``Connection: close``: each probe a new TCP connection, as many
real gateways do) or keeps it alive. In the same run, on the same fleet, two other probers are
measured the same way for comparison:

* ``plain``: a plain aiohttp loop (one task per origin, sleep to its slot, GET, check the code
  and the body), on asyncio's default event loop: the figure the issue compares against;
* ``loop``: the bot's ``ProbeLoop`` and ``Prober`` feeding a ``Monitor``, without the rest of
  the served bot (the probe path alone), on uvloop as ``serve`` runs;
* on demand, to tell the event loop's share from the client's: ``plain-uvloop`` (the plain
  aiohttp loop on uvloop) and ``loop-asyncio`` (the bot's probe path on asyncio's own loop).

Every prober runs in its own process pinned to one CPU, the fleet (and this script) on the other,
so the CPU measured is the prober's alone (user + system time of its process and all its
threads, from /proc, over the measured window). Per run it prints:

* CPU in % of one core and CPU ms per probe;
* probes/s, counted by the fleet (every request it answered in the window);
* late and dropped slots (``ProbeLoop``'s counts, read from the served bot's /metrics; the plain
  loop counts the same way);
* false alarms: posts to the Slack channel plus probe results that were not healthy (every origin
  is healthy throughout);
* RSS of the prober's process at the end of the window (and its peak);
* first round: from spawning the process to the fleet having answered every origin once;
* steady: from spawning it to the last slot it missed (late or dropped), measured by watching
  its counts until none has moved for 3 s (a prober that misses slots while it starts, e.g.
  writing every origin's first states, is not steady until then); the window starts after it.

and each beside its limit, for 1,000 origins every 1 s: CPU <= 25 % of one core, RSS <= 100 MB,
first round and steady <= 5 s; at every size: every origin probed each interval (probes/s no more
than 1 % short of origins/interval), late 0, dropped 0, false alarms 0. It prints figures and a
verdict per run; it asserts nothing.

Run from the project root (about 10 minutes with the defaults)::

    .venv/bin/python bench/monitor.py [--seconds 20] [--origins 100 1000] [--pools 3 each]
        [--fleet close keepalive] [--probers served plain loop] [--warmup 2] [--fleet-procs 1]
        [--no-pin]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import tomli_w

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script from anywhere

CONFIG = ROOT / "failover.toml"
INTERVAL = 1.0  # s, every origin probed once per interval
CPU_LIMIT = 25.0  # % of one core, at LIMITED_ORIGINS
RSS_LIMIT = 100.0  # MB, at LIMITED_ORIGINS
STARTUP_LIMIT = 5.0  # s, spawn to the first full round, at LIMITED_ORIGINS
RATE_SHORTFALL = 0.01  # probes/s may fall this fraction short of origins / interval
LIMITED_ORIGINS = 1000
WARMUP = 2.0  # s after the prober is steady, before the window
STARTUP_WAIT = 60.0  # s: a prober that has not probed every origin by then has failed
SETTLE_WAIT = 180.0  # s: a prober still missing slots by then is measured all the same
QUIET = 3.0  # s without a slot missed: the prober is steady
BOT_TOKEN = "xoxb-bench-0000-failover"
CHANNEL = "C0BENCH"
BODY = (
    '{{"timestamp":"{}","status":"healthy","region":"IAD",'
    '"checks":{{"d1":"ok","kv":"ok","services":"ok"}}}}'
)


# ---------------------------------------------------------------- the fleet (a child process)


class _FleetStats:
    def __init__(self, n: int) -> None:
        self.n = n
        self.requests = 0
        self.seen = bytearray(n)
        self.seen_count = 0
        self.full_at: float | None = None

    def reset(self) -> None:
        self.requests = 0
        self.seen = bytearray(self.n)
        self.seen_count = 0
        self.full_at = None

    def hit(self, index: int) -> None:
        self.requests += 1
        if not self.seen[index]:
            self.seen[index] = 1
            self.seen_count += 1
            if self.seen_count == self.n:
                self.full_at = time.monotonic()


class _Answer:
    """The gateway's answer, its timestamp refreshed every 100 ms."""

    def __init__(self, keepalive: bool) -> None:
        self.connection = b"keep-alive" if keepalive else b"close"
        self.at = 0.0
        self.bytes = b""

    def get(self) -> bytes:
        now = time.monotonic()
        if now - self.at > 0.1:
            self.at = now
            stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            body = BODY.format(stamp).encode()
            self.bytes = (
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n"
                b"Content-Length: %d\r\nX-Gateway-Region: bench\r\nConnection: %s\r\n\r\n%s"
                % (len(body), self.connection, body)
            )
        return self.bytes


class _OriginProtocol(asyncio.Protocol):
    def __init__(self, index: int, stats: _FleetStats, answer: _Answer, keepalive: bool) -> None:
        self.index = index
        self.stats = stats
        self.answer = answer
        self.keepalive = keepalive
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        transport = self.transport
        assert transport is not None
        while (end := buffer.find(b"\r\n\r\n")) >= 0:
            buffer = buffer[end + 4 :]
            self.stats.hit(self.index)
            transport.write(self.answer.get())
            if not self.keepalive:
                transport.close()  # the origin closes: the prober's next probe connects anew
                break
        self.buffer = buffer


async def _fleet(first: int, count: int, total: int, keepalive: bool) -> None:
    """Serve origins ``first .. first+count-1`` of ``total`` until stdin closes."""
    loop = asyncio.get_running_loop()
    stats = _FleetStats(count)
    answer = _Answer(keepalive)
    servers = []
    ports = []
    for i in range(count):
        server = await loop.create_server(
            lambda i=i: _OriginProtocol(i, stats, answer, keepalive),  # type: ignore[misc]
            "127.0.0.1",
            0,
            backlog=1024,
        )
        servers.append(server)
        ports.append(server.sockets[0].getsockname()[1])
    print(json.dumps(ports), flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).strip():
        if line == b"reset":
            stats.reset()
            print("{}", flush=True)
        elif line == b"stats":
            said = {"requests": stats.requests, "seen": stats.seen_count, "full_at": stats.full_at}
            print(json.dumps(said), flush=True)
    for server in servers:
        server.close()


# ---------------------------------------------------------------- the probers (child processes)


class _Counters:
    def __init__(self) -> None:
        self.probes = 0
        self.late = 0
        self.dropped = 0
        self.unhealthy = 0


async def _answer_stats(counters: _Counters) -> None:
    """Print the counters as JSON at each line on stdin; return when stdin closes."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.readline():
        print(json.dumps(vars(counters)), flush=True)


async def _plain(urls: list[str], interval: float, deadline: float) -> None:
    """The plain aiohttp loop: what a person would write in 60 lines."""
    import aiohttp

    counters = _Counters()
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))

    async def origin(url: str, slot: float) -> None:
        while True:
            await asyncio.sleep(max(0.0, slot - time.monotonic()))
            if time.monotonic() - slot > interval / 10:
                counters.late += 1
            counters.probes += 1
            try:
                async with asyncio.timeout(deadline), session.get(url + "/health") as resp:
                    body = await resp.content.read(65536)
                    ok = resp.status == 200 and b'"status":"healthy"' in body
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            counters.unhealthy += not ok
            slot += interval
            now = time.monotonic()
            if now > slot + interval / 10:
                missed = int((now - slot) // interval) + 1
                counters.dropped += missed
                slot += missed * interval

    start = time.monotonic()
    tasks = [
        asyncio.create_task(origin(url, start + i * interval / len(urls)))
        for i, url in enumerate(urls)
    ]
    await _answer_stats(counters)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await session.close()


async def _loop(config: str) -> None:
    """The bot's ProbeLoop and Prober feeding a Monitor, as the watch does, and nothing else."""
    from bot.fleet import load_fleet
    from bot.health import ProbeLoop, Prober
    from bot.monitor import Monitor
    from bot.observations import ProbeResult

    fleet = load_fleet(config)
    monitor = Monitor(fleet)
    counters = _Counters()
    prober = Prober(fleet.monitor, max_concurrency=fleet.watch.probe_concurrency)

    async def on_result(result: ProbeResult) -> bool:
        counters.unhealthy += not result.healthy
        monitor.observe(result, datetime.now(UTC))
        return monitor.pending_confirmation(result.region, result.origin)

    m = fleet.monitor
    loop = ProbeLoop(
        prober,
        fleet.origins,
        fleet.watch.probe_interval,
        on_result,
        max(m.consecutive_down, m.consecutive_up),
    )
    loop.start()

    async def answer() -> None:
        stdin = asyncio.StreamReader()
        aloop = asyncio.get_running_loop()
        await aloop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
        while await stdin.readline():
            counters.probes, counters.late, counters.dropped = loop.probes, loop.late, loop.dropped
            print(json.dumps(vars(counters)), flush=True)

    await answer()
    await loop.stop()
    await prober.aclose()


# ---------------------------------------------------------------- the run


@dataclass
class Run:
    prober: str  # served, plain, loop, plain-uvloop, loop-asyncio
    origins: int
    pools: str  # "3" or "each" (one pool per origin); "-" for the plain loop
    fleet: str  # close, keepalive
    seconds: float = 0.0
    requests: int = 0  # answered by the fleet in the window
    cpu: float = 0.0  # % of one core
    system: float = 0.0  # the part of it spent in the kernel, % of one core
    fleet_cpu: float = 0.0  # % of one core, all fleet processes together
    rss: float = 0.0
    peak: float = 0.0
    late: int = 0
    dropped: int = 0
    warmup_late: int = 0
    warmup_dropped: int = 0
    posts: int = 0
    unhealthy: int = 0
    startup: float | None = None  # s; None: never completed a round
    steady: float = 0.0  # s from spawning to keeping every slot (none missed for QUIET s)
    notes: list[str] = field(default_factory=list)

    @property
    def limited(self) -> bool:
        return self.origins == LIMITED_ORIGINS

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def alarms(self) -> int:
        return self.posts + self.unhealthy

    def failures(self) -> list[str]:
        out = []
        if self.startup is None:
            return ["never probed every origin"]
        if self.alarms:
            out.append("false alarms")
        if self.late or self.dropped:
            out.append("late/dropped")
        if self.rate < self.origins / INTERVAL * (1 - RATE_SHORTFALL):
            out.append("probes/s")
        if self.limited:
            if self.cpu > CPU_LIMIT:
                out.append("CPU")
            if self.rss > RSS_LIMIT:
                out.append("RSS")
            if self.startup > STARTUP_LIMIT or self.steady > STARTUP_LIMIT:
                out.append("start-up")
        return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and all its threads."""
    user, system = cpu_split(pid)
    return user + system


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process and all its threads."""
    parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(parts[11]) / tick, int(parts[12]) / tick


def rss_of(pid: int) -> tuple[float, float]:
    """(current, peak) resident set size in MB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


class Child:
    """A child process spoken to by lines on stdin, answering JSON lines on stdout."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(
        cls, args: list[str], cpu: int | None, env: dict[str, str] | None = None
    ) -> Child:
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
            cwd=ROOT,
            limit=2**20,
        )
        if cpu is not None:
            os.sched_setaffinity(proc.pid, {cpu})
        return cls(proc)

    async def line(self) -> Any:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        if not raw:
            raise RuntimeError(f"child {self.proc.pid} ended")
        return json.loads(raw)

    async def ask(self, what: str) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(what.encode() + b"\n")
        await self.proc.stdin.drain()
        return await self.line()

    async def stop(self, sig: int | None = None) -> None:
        if self.proc.returncode is None:
            if sig is not None:
                self.proc.send_signal(sig)
            elif self.proc.stdin is not None:
                self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


class Fleet:
    def __init__(self, children: list[Child], urls: list[str]) -> None:
        self.children = children
        self.urls = urls

    @classmethod
    async def start(cls, n: int, keepalive: bool, procs: int, cpu: int | None) -> Fleet:
        children, urls = [], []
        per = -(-n // procs)
        for first in range(0, n, per):
            count = min(per, n - first)
            args = [sys.executable, __file__, "--serve-fleet", f"{first},{count},{n}"]
            args += ["--keepalive"] if keepalive else []
            child = await Child.start(args, cpu)
            children.append(child)
            urls += [f"http://127.0.0.1:{port}" for port in await child.line()]
        return cls(children, urls)

    async def reset(self) -> None:
        for child in self.children:
            await child.ask("reset")

    async def stats(self) -> tuple[int, int, float | None]:
        """(requests, origins seen, when the last was first seen) since the last reset."""
        said = [await child.ask("stats") for child in self.children]
        full = [s["full_at"] for s in said]
        return (
            sum(s["requests"] for s in said),
            sum(s["seen"] for s in said),
            None if None in full else max(full),
        )

    def cpu(self) -> float:
        return sum(cpu_seconds(c.proc.pid) for c in self.children)

    async def stop(self) -> None:
        for child in self.children:
            await child.stop()


def fleet_config(urls: list[str], pools: str, path: Path) -> None:
    """A failover.toml: the project's own, with ``urls`` as origins in 3 pools or one pool each."""
    import tomllib

    data = tomllib.loads(CONFIG.read_text(encoding="utf-8"))
    base = data["regions"]
    if pools == "3":
        names = list(base)
        regions: dict[str, Any] = {
            name: base[name] | {"origins": [], "minimum_origins": 1} for name in names
        }
        for i, url in enumerate(urls):
            regions[names[i % 3]]["origins"].append({"name": f"o-{i + 1:04d}", "url": url})
    else:
        names = [f"r-{i + 1:04d}" for i in range(len(urls))]
        regions = {
            name: {
                "role": "primary" if i == 0 else "secondary",
                "pool": f"pool-{name}",
                "minimum_origins": 1,
                "origins": [{"name": f"o-{i + 1:04d}", "url": url}],
            }
            for i, (name, url) in enumerate(zip(names, urls, strict=True))
        }
    chain = names[:3]
    data["regions"] = regions
    lb = data["load_balancer"]
    lb["default_pools"] = chain
    lb["fallback_pool"] = chain[0]
    lb["region_pools"] = {geo: chain[i % len(chain) :] + chain[: i % len(chain)] for i, geo in
                          enumerate(lb["region_pools"])}  # fmt: skip
    data["watch"] = data.get("watch", {}) | {"probe_interval": f"{INTERVAL:g}s"}
    path.write_text(tomli_w.dumps(data), encoding="utf-8")


async def scrape(port: int) -> dict[str, float]:
    """The served bot's /metrics: late, dropped, and probe results by outcome."""
    import aiohttp

    out: dict[str, float] = {"late": 0.0, "dropped": 0.0, "results": 0.0, "unhealthy": 0.0}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/metrics") as resp,
    ):
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith("failover_probes_late "):
            out["late"] = float(line.split()[-1])
        elif line.startswith("failover_probes_dropped "):
            out["dropped"] = float(line.split()[-1])
        elif line.startswith("failover_probe_results_total{"):
            value = float(line.rsplit(" ", 1)[1])
            out["results"] += value
            if 'outcome="healthy"' not in line:
                out["unhealthy"] += value
    return out


async def wait_for_port(port: int, proc: asyncio.subprocess.Process, within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and proc.returncode is None:
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"the bot did not listen on {port}")


async def one_run(
    run: Run,
    fleet: Fleet,
    seconds: float,
    cpu: int | None,
    workdir: Path,
    slack: Any,
    warmup: float = WARMUP,
) -> None:
    from bot.db import schema
    from bot.db.engine import create_engine
    from bot.sandbox.servers import free_port

    config = workdir / f"failover-{run.origins}-{run.pools}.toml"
    fleet_config(fleet.urls, run.pools if run.pools != "-" else "3", config)
    port = free_port()
    served = run.prober == "served"
    if served:
        db = f"sqlite+aiosqlite:///{workdir}/bot-{run.origins}-{run.pools}-{run.fleet}.db"
        engine = create_engine(db)
        await schema.upgrade(engine)
        await engine.dispose()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "CLOUDFLARE_"))}
        env |= {
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": "bench-signing-secret",
            "SLACK_API_URL": slack.api_url,
            "SLACK_CHANNEL": CHANNEL,
            "DATABASE_URL": db,
            "FAILOVER_CONFIG": str(config),
            "PORT": str(port),
            "LOG_LEVEL": "WARNING",
        }
        args = [sys.executable, "-m", "bot", "serve"]
    elif run.prober.startswith("plain"):
        env = None
        args = [sys.executable, __file__, "--plain", json.dumps(fleet.urls)]
        args += ["--event-loop", "uvloop" if run.prober == "plain-uvloop" else "asyncio"]
    else:
        env = None
        args = [sys.executable, __file__, "--loop", str(config)]
        args += ["--event-loop", "asyncio" if run.prober == "loop-asyncio" else "uvloop"]
    posts0 = len(slack.channels.get(CHANNEL, []))
    await fleet.reset()
    spawned = time.monotonic()
    child = await Child.start(args, cpu, env)
    pid = child.proc.pid
    try:
        while True:
            _, seen, full_at = await fleet.stats()
            if full_at is not None:
                run.startup = full_at - spawned
                break
            if time.monotonic() - spawned > STARTUP_WAIT or child.proc.returncode is not None:
                run.notes.append(f"{seen} of {run.origins} origins probed after start-up")
                return
            await asyncio.sleep(0.05)

        async def counters() -> dict[str, float]:
            if served:
                return await scrape(port)
            said = await child.ask("stats")
            return {k: float(v) for k, v in said.items()} | {"results": said["probes"]}

        # Steady: no slot missed (late or dropped) for QUIET s. A prober that misses slots while
        # it starts (confirming every origin, writing its first states) is not steady until then.
        missed, kept_since = -1.0, time.monotonic()
        while time.monotonic() - kept_since < QUIET:
            if time.monotonic() - spawned > SETTLE_WAIT:
                run.notes.append(f"still missing slots {SETTLE_WAIT:g} s after start")
                break
            c = await counters()
            if c["late"] + c["dropped"] != missed:
                missed, kept_since = c["late"] + c["dropped"], time.monotonic()
            await asyncio.sleep(0.5)
        run.steady = max(kept_since - spawned, run.startup)
        await asyncio.sleep(warmup)
        c0 = await counters()
        run.warmup_late, run.warmup_dropped = int(c0["late"]), int(c0["dropped"])
        requests0, _, _ = await fleet.stats()
        fleet0, (user0, sys0), wall0 = fleet.cpu(), cpu_split(pid), time.monotonic()
        await asyncio.sleep(seconds)
        fleet1, (user1, sys1), wall1 = fleet.cpu(), cpu_split(pid), time.monotonic()
        requests1, _, _ = await fleet.stats()
        run.rss, run.peak = rss_of(pid)
        c1 = await counters()
        run.seconds = wall1 - wall0
        run.cpu = 100 * (user1 + sys1 - user0 - sys0) / run.seconds
        run.system = 100 * (sys1 - sys0) / run.seconds
        run.fleet_cpu = 100 * (fleet1 - fleet0) / run.seconds
        run.requests = requests1 - requests0
        run.late, run.dropped = int(c1["late"] - c0["late"]), int(c1["dropped"] - c0["dropped"])
        run.unhealthy = int(c1["unhealthy"])  # warm-up included
        if run.warmup_late or run.warmup_dropped:
            run.notes.append(
                f"before the window: {run.warmup_late} late, {run.warmup_dropped} dropped; "
                f"steady {run.steady:.1f} s after start"
            )
    finally:
        await child.stop(signal.SIGTERM if served else None)
        run.posts = len(slack.channels.get(CHANNEL, [])) - posts0


# ---------------------------------------------------------------- the report


def limit(value: str, bound: str, applies: bool) -> str:
    return f"{value} / {bound}" if applies else f"{value} / -"


def report(runs: list[Run], seconds: float, warmup: float, pinned: str, procs: int) -> None:
    headers = (
        "prober",
        "fleet",
        "origins",
        "pools",
        "CPU % / limit",
        "of it sys %",
        "CPU ms/probe",
        "probes/s / goal",
        "late",
        "dropped",
        "false alarms",
        "RSS MB / limit",
        "peak MB",
        "first round s / limit",
        "steady s / limit",
        "fleet CPU %",
        "verdict",
    )
    rows = []
    for r in runs:
        failures = r.failures()
        lim = r.limited
        rows.append(
            (
                r.prober,
                r.fleet,
                str(r.origins),
                r.pools,
                limit(f"{r.cpu:.1f}", f"{CPU_LIMIT:g}", lim),
                f"{r.system:.1f}",
                f"{10 * r.cpu * r.seconds / r.requests:.3f}" if r.requests else "-",
                f"{r.rate:.0f} / {r.origins / INTERVAL:.0f}",
                str(r.late),
                str(r.dropped),
                str(r.alarms),
                limit(f"{r.rss:.1f}", f"{RSS_LIMIT:g}", lim),
                f"{r.peak:.1f}",
                limit(
                    f"{r.startup:.2f}" if r.startup is not None else "never",
                    f"{STARTUP_LIMIT:g}",
                    lim,
                ),
                limit(f"{r.steady:.1f}", f"{STARTUP_LIMIT:g}", lim),
                f"{r.fleet_cpu:.1f}",
                "ok" if not failures else "MISSED: " + ", ".join(failures),
            )
        )
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    print()
    print("  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)))
    for row in rows:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
    print()
    print(
        f"settings: every origin every {INTERVAL:g} s; {seconds:g} s measured per run once the "
        f"prober is steady (no slot missed for {QUIET:g} s) and {warmup:g} s more; the monitor "
        f"of failover.toml (timeout, retries, headers); fleet in {procs} process(es); {pinned}"
    )
    print(
        f"limits at {LIMITED_ORIGINS} origins: CPU <= {CPU_LIMIT:g} % of one core, RSS <= "
        f"{RSS_LIMIT:g} MB, first round and steady <= {STARTUP_LIMIT:g} s; at every size: probes/s "
        f"at least "
        f"{100 * (1 - RATE_SHORTFALL):g} % of origins/interval, late 0, dropped 0, false alarms 0"
    )
    print(
        "served: `failover-bot serve` (watch, scheduler, SQLite, Bolt HTTP app, Slack stand-in; "
        "no Cloudflare) on uvloop; loop: ProbeLoop + Prober + Monitor alone, on uvloop (-asyncio: "
        "on asyncio's loop); plain: a plain aiohttp loop on asyncio's default event loop "
        "(-uvloop: on uvloop). CPU: user + system time of the prober's process over the "
        "window. false alarms: channel posts + unhealthy probe results (from the start). first "
        "round: from spawning the process to the fleet having answered every origin once. steady: "
        "from spawning it to the last slot it missed (late or dropped), or to its first round."
    )
    for r in runs:
        if r.notes:
            print(f"{r.prober} {r.fleet} {r.origins} pools {r.pools}: " + "; ".join(r.notes))


# ---------------------------------------------------------------- main


async def bench(args: argparse.Namespace, prober_cpu: int | None, other_cpu: int | None) -> None:
    from bot.sandbox.slack import SlackStandIn

    slack = SlackStandIn(BOT_TOKEN)
    await slack.start()
    runs: list[Run] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-monitor-") as tmp:
            for n in args.origins:
                for mode in args.fleet:
                    fleet = await Fleet.start(n, mode == "keepalive", args.fleet_procs, other_cpu)
                    try:
                        for prober in args.probers:
                            for pools in args.pools if not prober.startswith("plain") else ["-"]:
                                run = Run(prober, n, pools, mode)
                                print(
                                    f"  {prober:6} {n:5} origins, fleet {mode:9}, pools {pools}",
                                    flush=True,
                                )
                                await one_run(
                                    run,
                                    fleet,
                                    args.seconds,
                                    prober_cpu,
                                    Path(tmp),
                                    slack,
                                    args.warmup,
                                )
                                runs.append(run)
                    finally:
                        await fleet.stop()
    finally:
        await slack.close()
    procs = args.fleet_procs
    pinned = (
        f"probers pinned to CPU {prober_cpu}, the fleet and this script to CPU {other_cpu}"
        if prober_cpu is not None
        else "not pinned"
    )
    report(runs, args.seconds, args.warmup, pinned, procs)


def use_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=20.0, help="measured per run (20)")
    parser.add_argument("--origins", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--pools", nargs="+", choices=["3", "each"], default=["3", "each"])
    parser.add_argument(
        "--fleet", nargs="+", choices=["close", "keepalive"], default=["close", "keepalive"]
    )
    parser.add_argument(
        "--probers",
        nargs="+",
        choices=["served", "plain", "loop", "plain-uvloop", "loop-asyncio"],
        default=["served", "plain", "loop"],
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=WARMUP,
        help=f"s after the first full round before measuring ({WARMUP:g})",
    )
    parser.add_argument("--fleet-procs", type=int, default=1, help="fleet processes (1)")
    parser.add_argument("--no-pin", action="store_true", help="leave every process on any CPU")
    parser.add_argument("--serve-fleet", help=argparse.SUPPRESS)
    parser.add_argument("--keepalive", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--plain", help=argparse.SUPPRESS)
    parser.add_argument("--loop", help=argparse.SUPPRESS)
    parser.add_argument("--event-loop", choices=["asyncio", "uvloop"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_fleet:
        use_uvloop()  # the fleet should cost as little as it can: it shares a CPU with this script
        first, count, total = (int(x) for x in args.serve_fleet.split(","))
        asyncio.run(_fleet(first, count, total, args.keepalive))
        return
    if args.event_loop == "uvloop":
        use_uvloop()  # as `failover-bot serve` runs
    if args.plain:
        asyncio.run(_plain(json.loads(args.plain), INTERVAL, 5.0))
        return
    if args.loop:
        asyncio.run(_loop(args.loop))
        return
    if args.seconds <= 0 or min(args.origins) < 1 or args.fleet_procs < 1:
        parser.error("--seconds must be positive, --origins and --fleet-procs at least 1")
    logging.basicConfig(level=logging.WARNING)
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    prober_cpu = other_cpu = None
    if not args.no_pin and len(cpus) >= 2:
        prober_cpu, other_cpu = cpus[0], cpus[1]
        os.sched_setaffinity(0, {other_cpu})
    asyncio.run(bench(args, prober_cpu, other_cpu))


if __name__ == "__main__":
    main()
