"""The probing loop and the monitor at scale: CPU, memory and slot keeping on one core.

For 100 and 1,000 healthy origins probed every 5 s and every 1 s, the bot's ``ProbeLoop`` probes
them through one ``Prober`` and feeds every result to a ``Monitor``, as the watch does. Every
origin points at ONE sandbox gateway (``bot.sandbox.gateways.Gateway``) served by a child process
of this script, so that the CPU measured here (``time.process_time``) is the bot's alone; when
there are two CPUs or more, the bot is pinned to one and the gateway to another. After a warm-up
of two intervals (the first probes of each origin confirm it healthy, which re-probes it at once)
each scenario is measured for ``--seconds`` and the script prints, per scenario: probes made,
probes/s, CPU in % of one core, RSS (current and peak, in MB), probes late and slots dropped (as
``ProbeLoop`` counts them), the worst slot lateness (from the slot to the probe's request, its
wait for a concurrency slot included), false alarms (events the monitor produced: for healthy
origins there must be none), and next to them the limits they are held against:

* zero false alarms;
* every probe started within a tenth of an interval of its slot (late 0, dropped 0);
* at 1,000 origins every 1 s: at most 25 % of one core and 100 MB RSS.

Scenarios run one after another in this one process, so RSS and peak RSS include what earlier
scenarios left behind (an upper bound for the later ones). It prints figures; it asserts nothing.

Run from the project root (about 2.5 minutes with the defaults)::

    .venv/bin/python bench/monitor.py [--seconds 30] [--origins 100 1000] [--intervals 5 1]
        [--concurrency 64] [--no-pin]

``--seconds 180`` sustains each scenario for three minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import resource
import subprocess
import sys
import time
from array import array
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bot.fleet import Fleet, MonitorSettings, Origin, load_fleet
from bot.health import MAX_CONCURRENCY, ProbeLoop, Prober
from bot.monitor import Monitor
from bot.observations import ProbeResult

CONFIG = Path(__file__).resolve().parent.parent / "failover.toml"
CPU_LIMIT = 25.0  # % of one core, at LIMITED_SCALE
RSS_LIMIT = 100.0  # MB, at LIMITED_SCALE
LIMITED_SCALE = (1000, 1.0)  # (origins, interval s) the CPU and RSS limits apply to
SLOT_TOLERANCE = 0.1  # a probe must start within this fraction of an interval of its slot
WARMUP_INTERVALS = 2
TIMEOUT = 2.0  # the monitor's timeout for the bench (s); retries 0
EARLY = 0.001  # a wake-up this close before a slot counts as on time (s)


@dataclass
class Scenario:
    origins: int
    interval: float
    seconds: float = 0.0
    probes: int = 0
    cpu: float = 0.0  # % of one core
    server_cpu: float | None = None  # the gateway process, % of one core
    rss: float = 0.0  # MB, at the end of the window
    peak: float = 0.0  # MB, the process's high-water mark so far
    late: int = 0
    dropped: int = 0
    warmup_late: int = 0
    warmup_dropped: int = 0
    worst_late: float = 0.0  # s, slot to request, within the window
    worst_wake: float = 0.0  # s, slot to the loop waking for it
    worst_queue: float = 0.0  # s, waiting for a concurrency slot
    over_tolerance: int = 0  # probes in the window that started later than the tolerance
    unhealthy: int = 0  # results that were not healthy (all origins are)
    alarms: int = 0  # events from the monitor, warm-up included
    alarm_kinds: dict[str, int] = field(default_factory=dict)

    @property
    def limited(self) -> bool:
        return (self.origins, self.interval) == LIMITED_SCALE

    @property
    def tolerance(self) -> float:
        return self.interval * SLOT_TOLERANCE

    def failures(self) -> list[str]:
        out = []
        if self.alarms:
            out.append("false alarms")
        if self.late or self.dropped:
            out.append("late/dropped")
        if self.unhealthy:
            out.append("unhealthy probes")
        if self.limited and self.cpu > CPU_LIMIT:
            out.append("CPU")
        if self.limited and self.rss > RSS_LIMIT:
            out.append("RSS")
        return out


class TimedProber(Prober):
    """A Prober that notes how long after its slot each probe's request started."""

    def __init__(self, monitor: MonitorSettings, max_concurrency: int) -> None:
        super().__init__(monitor, max_concurrency=max_concurrency)
        self.first_slot: dict[str, float] = {}  # origin -> monotonic time of its first slot
        self.interval = 1.0
        self.recording = False
        self.lateness = array("d")  # slot to request, per probe (s)
        self.worst_wake = 0.0  # slot to the loop waking for it (what ProbeLoop counts late)
        self.worst_queue = 0.0  # waiting for a concurrency slot after waking

    async def probe(self, region: str, origin: Origin) -> ProbeResult:
        woke, wall = time.monotonic(), time.time()
        result = await super().probe(region, origin)
        if self.recording:
            phase = (woke - self.first_slot[origin.name]) % self.interval
            if phase > self.interval - EARLY:
                phase = 0.0  # woken a hair before the slot
            queued = max(0.0, result.at.timestamp() - wall)  # waiting for a concurrency slot
            self.lateness.append(phase + queued)
            self.worst_wake = max(self.worst_wake, phase)
            self.worst_queue = max(self.worst_queue, queued)
        return result


def fleet_of(base: Fleet, n: int, url: str) -> Fleet:
    """``base`` with its regions' origins replaced by ``n`` at ``url``, spread over the regions."""
    names = list(base.regions)
    origins: dict[str, list[Origin]] = {name: [] for name in names}
    for i in range(n):
        origins[names[i % len(names)]].append(Origin(name=f"o-{i + 1:04d}", url=url))
    regions = {
        name: region.model_copy(update={"origins": origins[name], "minimum_origins": 1})
        for name, region in base.regions.items()
    }
    monitor = base.monitor.model_copy(update={"retries": 0, "timeout": TIMEOUT})
    return base.model_copy(update={"regions": regions, "monitor": monitor})


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident set size of this process in MB."""
    try:
        fields = dict(
            line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines()
        )
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024
    except (OSError, KeyError, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux
        return peak, peak


def cpu_seconds_of(pid: int) -> float | None:
    """User + system CPU seconds of another process, from /proc (None where unreadable)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        parts = stat.rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


async def run_scenario(
    base: Fleet, url: str, s: Scenario, seconds: float, concurrency: int, server_pid: int
) -> None:
    fleet = fleet_of(base, s.origins, url)
    monitor = Monitor(fleet)
    prober = TimedProber(fleet.monitor, concurrency)
    prober.interval = s.interval

    async def on_result(result: ProbeResult) -> bool:
        if not result.healthy:
            s.unhealthy += 1
            if s.unhealthy <= 3:
                print(f"    unhealthy: {result.origin}: {result.reason}", flush=True)
        events = monitor.observe(result, datetime.now(UTC))
        for event in events:
            s.alarms += 1
            s.alarm_kinds[event.kind.value] = s.alarm_kinds.get(event.kind.value, 0) + 1
        return monitor.pending_confirmation(result.region, result.origin)

    targets = fleet.origins
    m = fleet.monitor
    # As bot/scheduler.py builds it: a change seen is confirmed by up to this many probes at once.
    loop = ProbeLoop(
        prober, targets, s.interval, on_result, max(m.consecutive_down, m.consecutive_up)
    )
    start = time.monotonic()  # ProbeLoop.start takes its own clock reading a moment later
    prober.first_slot = {
        origin.name: start + i * s.interval / len(targets) for i, (_, origin) in enumerate(targets)
    }
    try:
        loop.start()
        await asyncio.sleep(WARMUP_INTERVALS * s.interval)
        s.warmup_late, s.warmup_dropped = loop.late, loop.dropped
        s.unhealthy = 0  # count only the window's (warm-up ones are printed all the same)
        probes0, late0, dropped0 = loop.probes, loop.late, loop.dropped
        server0 = cpu_seconds_of(server_pid)
        prober.recording = True
        wall0, cpu0 = time.monotonic(), time.process_time()
        await asyncio.sleep(seconds)
        wall1, cpu1 = time.monotonic(), time.process_time()
        prober.recording = False
        server1 = cpu_seconds_of(server_pid)
        s.seconds = wall1 - wall0
        s.probes = loop.probes - probes0
        s.late, s.dropped = loop.late - late0, loop.dropped - dropped0
        s.cpu = 100 * (cpu1 - cpu0) / s.seconds
        if server0 is not None and server1 is not None:
            s.server_cpu = 100 * (server1 - server0) / s.seconds
        s.rss, s.peak = rss_mb()
        if prober.lateness:
            s.worst_late = max(prober.lateness)
            s.worst_wake, s.worst_queue = prober.worst_wake, prober.worst_queue
            s.over_tolerance = sum(1 for v in prober.lateness if v > s.tolerance)
    finally:
        await loop.stop()
        await prober.aclose()


def fmt_limit(value: float, limit: float | None, digits: int = 1) -> str:
    shown = f"{value:.{digits}f}"
    return f"{shown} / {limit:g}" if limit is not None else f"{shown} / -"


def report(scenarios: list[Scenario], seconds: float, concurrency: int, pinned: str) -> None:
    headers = (
        "origins",
        "interval s",
        "seconds",
        "probes",
        "expected",
        "probes/s",
        "CPU ms/probe",
        "CPU % / limit",
        "RSS MB / limit",
        "peak MB",
        "late",
        "dropped",
        "worst late ms / limit",
        "false alarms",
        "gateway CPU %",
        "verdict",
    )
    rows = []
    for s in scenarios:
        failures = s.failures()
        rows.append(
            (
                f"{s.origins}",
                f"{s.interval:g}",
                f"{s.seconds:.1f}",
                f"{s.probes}",
                f"{s.origins * s.seconds / s.interval:.0f}",
                f"{s.probes / s.seconds:.1f}" if s.seconds else "-",
                f"{1000 * s.cpu / 100 * s.seconds / s.probes:.3f}" if s.probes else "-",
                fmt_limit(s.cpu, CPU_LIMIT if s.limited else None),
                fmt_limit(s.rss, RSS_LIMIT if s.limited else None),
                f"{s.peak:.1f}",
                f"{s.late}",
                f"{s.dropped}",
                fmt_limit(1000 * s.worst_late, 1000 * s.tolerance),
                f"{s.alarms}",
                f"{s.server_cpu:.1f}" if s.server_cpu is not None else "-",
                "ok" if not failures else "MISSED: " + ", ".join(failures),
            )
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    print()
    print("  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)))
    for row in rows:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
    print()
    print(
        f"settings: {seconds:g} s measured per scenario after {WARMUP_INTERVALS} intervals of "
        f"warm-up; monitor timeout {TIMEOUT:g} s, retries 0; prober concurrency {concurrency}; "
        f"{pinned}"
    )
    origins, interval = LIMITED_SCALE
    print(
        "limits: false alarms 0 (every origin is healthy); late 0 and dropped 0 (each probe "
        "within interval/10 of its slot); "
        f"at {origins} origins every {interval:g} s: CPU <= {CPU_LIMIT:g} % of one core, "
        f"RSS <= {RSS_LIMIT:g} MB"
    )
    print(
        "CPU: process_time delta / wall time of the window (the bot's process only; the gateway "
        "answering the probes is a separate process, its CPU shown apart). RSS: VmRSS at the end "
        "of the window; peak: VmHWM since the script started (scenarios share the process)."
    )
    print(
        "worst late: from an origin's slot to its probe's request, its wait for a concurrency "
        "slot included (ProbeLoop counts a probe late only by when it wakes; a probe that then "
        "waits or runs past its next slot shows as dropped). CPU ms/probe: CPU time / probes."
    )
    for s in scenarios:
        notes = []
        if s.warmup_late or s.warmup_dropped:
            notes.append(f"warm-up: {s.warmup_late} late, {s.warmup_dropped} dropped")
        if s.over_tolerance:
            notes.append(
                f"{s.over_tolerance} of {s.probes} probes started later than interval/10 "
                f"(worst wake-up {1000 * s.worst_wake:.1f} ms after the slot, worst wait for a "
                f"concurrency slot {1000 * s.worst_queue:.1f} ms)"
            )
        if s.unhealthy:
            notes.append(f"{s.unhealthy} unhealthy results")
        if s.alarm_kinds:
            notes.append(
                "events: " + ", ".join(f"{k} x{n}" for k, n in sorted(s.alarm_kinds.items()))
            )
        if notes:
            print(f"{s.origins} origins every {s.interval:g} s: " + "; ".join(notes))


async def bench(
    url: str,
    server_pid: int,
    origins: list[int],
    intervals: list[float],
    seconds: float,
    concurrency: int,
) -> list[Scenario]:
    base = load_fleet(CONFIG)
    scenarios: list[Scenario] = []
    rss, _ = rss_mb()
    print(f"gateway at {url}; RSS before the first scenario {rss:.1f} MB", flush=True)
    for n in origins:
        for interval in intervals:
            s = Scenario(n, interval)
            print(f"  {n} origins every {interval:g} s ...", flush=True)
            await run_scenario(base, url, s, seconds, concurrency, server_pid)
            scenarios.append(s)
            gc.collect()
    return scenarios


async def serve() -> None:
    """The child process: one healthy gateway until stdin closes."""
    from bot.sandbox.gateways import Gateway

    gateway = Gateway("bench")
    await gateway.start()
    print(gateway.url, flush=True)
    try:
        await asyncio.to_thread(sys.stdin.buffer.read)
    finally:
        await gateway.close()


def pin(cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


def cpus() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--seconds", type=float, default=30.0, help="measured per scenario (default 30)"
    )
    parser.add_argument(
        "--origins", type=int, nargs="+", default=[100, 1000], help="default: 100 1000"
    )
    parser.add_argument(
        "--intervals", type=float, nargs="+", default=[5.0, 1.0], help="seconds (default: 5 1)"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=MAX_CONCURRENCY,
        help=f"the prober's concurrent probes (default {MAX_CONCURRENCY})",
    )
    parser.add_argument(
        "--no-pin", action="store_true", help="leave the bot and the gateway on any CPU"
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        pin(args.cpu)
        asyncio.run(serve())
        return
    if args.seconds <= 0 or args.concurrency < 1 or min(args.origins) < 1:
        parser.error("--seconds must be positive, --concurrency and --origins at least 1")
    if min(args.intervals) <= 0:
        parser.error("--intervals must be positive")
    logging.basicConfig(level=logging.WARNING)
    available = cpus()
    bot_cpu = server_cpu = None
    if not args.no_pin and len(available) >= 2:
        bot_cpu, server_cpu = available[0], available[1]
        pinned = f"bot pinned to CPU {bot_cpu}, gateway to CPU {server_cpu}"
    else:
        pinned = "not pinned" + (" (one CPU: the gateway shares it)" if len(available) < 2 else "")
    command = [sys.executable, str(Path(__file__).resolve()), "--serve"]
    if server_cpu is not None:
        command += ["--cpu", str(server_cpu)]
    server = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        if not url.startswith("http://127.0.0.1:"):
            print("the gateway process did not start; nothing measured", file=sys.stderr)
            return
        pin(bot_cpu)
        scenarios = asyncio.run(
            bench(url, server.pid, args.origins, args.intervals, args.seconds, args.concurrency)
        )
        report(scenarios, args.seconds, args.concurrency, pinned)
    finally:
        if server.stdin is not None:
            server.stdin.close()
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.terminate()
            server.wait(timeout=5)


if __name__ == "__main__":
    main()
