"""Prometheus metrics: what an operator graphs and alerts on (served at ``GET /metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

PROBE_SECONDS = Histogram(
    "failover_probe_seconds",
    "Latency of the bot's probes",
    ["region", "origin"],
    registry=REGISTRY,
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
PROBE_RESULTS = Counter(
    "failover_probe_results_total",
    "Probe results by outcome",
    ["region", "origin", "outcome"],
    registry=REGISTRY,
)
PROBES_LATE = Gauge(
    "failover_probes_late",
    "Probe slots started late (more than a tenth of the interval)",
    registry=REGISTRY,
)
PROBES_DROPPED = Gauge("failover_probes_dropped", "Probe slots missed entirely", registry=REGISTRY)
POOL_STATE = Gauge(
    "failover_pool_state", "1 for the pool's current state", ["region", "state"], registry=REGISTRY
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


def exposition() -> bytes:
    return generate_latest(REGISTRY)
