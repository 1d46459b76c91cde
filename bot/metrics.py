"""Prometheus metrics: what an operator graphs and alerts on (served at ``GET /metrics``)."""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

# The probe metrics, per origin: a latency histogram and results by outcome. They are kept as
# plain numbers and written by ``exposition`` in the same text prometheus_client would write for
# a Histogram and a Counter with these labels: its labelled children cost a lock per sample and a
# second or more of CPU per minute at 1,000 probes a second, and their exposition at 1,000 origins
# took 0.1 to 0.2 s, a stall of the event loop (and of every probe slot) at each scrape.
PROBE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_PROBE_SECONDS = "failover_probe_seconds"
_PROBE_SECONDS_HELP = "Latency of the bot's probes"
_PROBE_RESULTS = "failover_probe_results"
_PROBE_RESULTS_HELP = "Probe results by outcome"


def _float(d: float) -> str:
    """A sample's value as prometheus_client writes it (Go's notation: 1.5e+07 from 1e+06 up)."""
    if d == math.inf:
        return "+Inf"
    if d == -math.inf:
        return "-Inf"
    if math.isnan(d):
        return "NaN"
    s = repr(float(d))
    dot = s.find(".")
    if d > 0 and dot > 6:
        mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return s


_LE = (*(_float(b) for b in PROBE_BUCKETS), "+Inf")


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _count(n: int) -> str:
    return f"{n}.0" if n < 1_000_000 else _float(n)


class OriginProbes:
    """One origin's probe latency and results: a few numbers, no lock or lookup per probe."""

    __slots__ = ("buckets", "count", "created", "labels", "origin", "region", "results", "seconds")

    def __init__(self, region: str, origin: str) -> None:
        self.origin = f'origin="{_label(origin)}"'
        self.region = f'region="{_label(region)}"'
        self.labels = f"{self.origin},{self.region}"
        self.buckets = [0] * (len(PROBE_BUCKETS) + 1)  # per bucket, not cumulative; +Inf last
        self.count = 0
        self.seconds = 0.0
        self.created = time.time()
        self.results: dict[str, list[float]] = {}  # outcome -> [count, created]

    def observe(self, seconds: float, outcome: str) -> None:
        self.buckets[bisect_left(PROBE_BUCKETS, seconds)] += 1
        self.count += 1
        self.seconds += seconds
        result = self.results.get(outcome)
        if result is None:
            result = self.results[outcome] = [0.0, time.time()]
        result[0] += 1


_ORIGIN_PROBES: dict[tuple[str, str], OriginProbes] = {}


def origin_probes(region: str, origin: str) -> OriginProbes:
    """The metrics of one origin, shared by every prober (the watch's and status')."""
    found = _ORIGIN_PROBES.get((region, origin))
    if found is None:
        found = _ORIGIN_PROBES[(region, origin)] = OriginProbes(region, origin)
    return found


# Origins written per chunk of /metrics: the page is sent in pieces of some 25 KB, never built
# whole. At 1,000 origins it is about 2 MB, and building it at each scrape (with its copies) left
# the process's heap larger for good (glibc reuses, but does not return, the freed space).
CHUNK = 200


def _batches(origins: list[OriginProbes]) -> Iterator[list[OriginProbes]]:
    for i in range(0, len(origins), CHUNK):
        yield origins[i : i + CHUNK]


def _probe_exposition() -> Iterator[str]:
    origins = list(_ORIGIN_PROBES.values())
    yield f"# HELP {_PROBE_SECONDS} {_PROBE_SECONDS_HELP}\n# TYPE {_PROBE_SECONDS} histogram\n"
    for batch in _batches(origins):
        out: list[str] = []
        add = out.append
        for o in batch:
            labels, total = o.labels, 0
            for le, n in zip(_LE, o.buckets, strict=True):
                total += n
                add(f'{_PROBE_SECONDS}_bucket{{le="{le}",{labels}}} {_count(total)}\n')
            add(f"{_PROBE_SECONDS}_count{{{labels}}} {_count(o.count)}\n")
            add(f"{_PROBE_SECONDS}_sum{{{labels}}} {_float(o.seconds)}\n")
        yield "".join(out)
    if origins:
        yield (
            f"# HELP {_PROBE_SECONDS}_created {_PROBE_SECONDS_HELP}\n"
            f"# TYPE {_PROBE_SECONDS}_created gauge\n"
        )
        for batch in _batches(origins):
            yield "".join(
                f"{_PROBE_SECONDS}_created{{{o.labels}}} {_float(o.created)}\n" for o in batch
            )
    yield (
        f"# HELP {_PROBE_RESULTS}_total {_PROBE_RESULTS_HELP}\n"
        f"# TYPE {_PROBE_RESULTS}_total counter\n"
    )
    for batch in _batches(origins):
        yield "".join(
            f'{_PROBE_RESULTS}_total{{{o.origin},outcome="{_label(outcome)}",{o.region}}} '
            f"{_count(int(count))}\n"
            for o in batch
            for outcome, (count, _) in o.results.items()
        )
    if any(o.results for o in origins):
        yield (
            f"# HELP {_PROBE_RESULTS}_created {_PROBE_RESULTS_HELP}\n"
            f"# TYPE {_PROBE_RESULTS}_created gauge\n"
        )
        for batch in _batches(origins):
            yield "".join(
                f'{_PROBE_RESULTS}_created{{{o.origin},outcome="{_label(outcome)}",{o.region}}} '
                f"{_float(at)}\n"
                for o in batch
                for outcome, (_, at) in o.results.items()
            )


PROBES_LATE = Gauge(
    "failover_probes_late",
    "Probe slots started late (more than a tenth of the interval)",
    registry=REGISTRY,
)
PROBES_DROPPED = Gauge("failover_probes_dropped", "Probe slots missed entirely", registry=REGISTRY)
# Each pool's state, one gauge per (region, state) as a labelled Gauge would write it; the lines
# of a pool are written when its state changes, so that a scrape at 1,000 pools only joins them.
_POOL_STATE = "failover_pool_state"
_POOL_STATE_HEAD = (
    f"# HELP {_POOL_STATE} 1 for the pool's current state\n# TYPE {_POOL_STATE} gauge\n"
)
_POOL_STATES: dict[str, str] = {}


def set_pool_state(region: str, state: str, states: Iterable[str]) -> None:
    """``region``'s pool is in ``state`` (1), and in none of the other ``states`` (0)."""
    r = _label(region)
    _POOL_STATES[region] = "".join(
        f'{_POOL_STATE}{{region="{r}",state="{_label(s)}"}} {"1.0" if s == state else "0.0"}\n'
        for s in states
    )


ALERTS_POSTED = Counter(
    "failover_alerts_posted_total", "Posts to the channel", ["kind"], registry=REGISTRY
)
CLOUDFLARE_CALLS = Counter(
    "failover_cloudflare_calls_total",
    "Cloudflare API calls by result",
    ["result"],
    registry=REGISTRY,
)
SLACK_REPLIES = Counter(
    "failover_slack_replies_total",
    "Replies to commands and buttons by outcome",
    ["outcome"],
    registry=REGISTRY,
)
DRILL_RTO = Histogram(
    "failover_drill_rto_seconds",
    "RTO measured by drills",
    ["region"],
    registry=REGISTRY,
    buckets=(1, 2, 5, 10, 20, 30, 45, 60, 120),
)
LEADER = Gauge("failover_lease_holder", "1 while this instance holds the lease", registry=REGISTRY)


def exposition_chunks() -> Iterator[bytes]:
    """The /metrics page in pieces of at most ``CHUNK`` origins or pools (see ``CHUNK``)."""
    for text in _probe_exposition():
        yield text.encode()
    yield _POOL_STATE_HEAD.encode()
    states = list(_POOL_STATES.values())
    for i in range(0, len(states), CHUNK):
        yield "".join(states[i : i + CHUNK]).encode()
    yield generate_latest(REGISTRY)


def exposition() -> bytes:
    return b"".join(exposition_chunks())
