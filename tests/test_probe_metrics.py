"""The probe metrics are written as prometheus_client writes a Histogram and a Counter, cheaply."""

from __future__ import annotations

import random
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from bot import metrics


def without_created(text: str) -> list[str]:
    # *_created carries each series' creation time, which differs between the two by design.
    return [line for line in text.splitlines() if "_created" not in line]


def test_the_same_text_as_prometheus_client() -> None:
    registry = CollectorRegistry()
    seconds = Histogram(
        "failover_probe_seconds",
        "Latency of the bot's probes",
        ["region", "origin"],
        registry=registry,
        buckets=metrics.PROBE_BUCKETS,
    )
    results = Counter(
        "failover_probe_results_total",
        "Probe results by outcome",
        ["region", "origin", "outcome"],
        registry=registry,
    )
    rng = random.Random(7)
    origins = [("us-east", "gw-1"), ("eu-west", 'odd "name"'), ("apac-sg", "back\\slash")]
    for _ in range(300):
        region, origin = rng.choice(origins)
        # Bounds themselves, just above them, and beyond the last.
        value = rng.choice([0.0004, 0.01, 0.010001, 0.25, 0.3, 1.0, 7.5, 10.0, 12.0])
        outcome = rng.choice(["healthy", "timeout", "unexpected status"])
        seconds.labels(region, origin).observe(value)
        results.labels(region, origin, outcome).inc()
        metrics.origin_probes(f"test-{region}", origin).observe(value, outcome)
    text = without_created(metrics.exposition().decode())
    ours = [line.replace('region="test-', 'region="') for line in text if 'region="test-' in line]
    theirs = without_created(generate_latest(registry).decode())
    # The same lines (a family's series may come in another order, which Prometheus ignores).
    assert sorted(ours) == sorted(line for line in theirs if not line.startswith("#"))
    headers = [line for line in theirs if line.startswith("#")]
    assert [line for line in text if line in headers] == headers


def test_large_counts_read_as_prometheus_writes_them() -> None:
    o = metrics.OriginProbes("r", "o")
    o.count = 12_345_678
    text_count = metrics._count(o.count)
    assert text_count == "1.2345678e+07"
    assert metrics._count(999_999) == "999999.0"


def test_a_scrape_of_a_thousand_origins_is_quick() -> None:
    for i in range(1000):
        metrics.origin_probes("bulk", f"o-{i:04d}").observe(0.002, "healthy")
    started = time.perf_counter()
    text = metrics.exposition()
    took = time.perf_counter() - started
    assert b'failover_probe_seconds_bucket{le="0.01",origin="o-0999",region="bulk"} 1.0' in text
    # prometheus_client's children took 0.1 to 0.2 s here: a stall of every probe slot.
    assert took < 0.08


def test_pool_states_as_a_labelled_gauge_writes_them() -> None:
    registry = CollectorRegistry()
    gauge = Gauge(
        "failover_pool_state",
        "1 for the pool's current state",
        ["region", "state"],
        registry=registry,
    )
    states = ["healthy", "degraded", "down"]
    for region, state in [("test-eu", "down"), ('test-"q"', "healthy"), ("test-eu", "healthy")]:
        metrics.set_pool_state(region, state, states)
        for each in states:
            gauge.labels(region, each).set(1 if each == state else 0)
    ours = [ln for ln in metrics.exposition().decode().splitlines() if "failover_pool_state" in ln]
    theirs = generate_latest(registry).decode().splitlines()
    assert [ln for ln in ours if ln.startswith("#")] == theirs[:2]
    assert sorted(ln for ln in ours if 'region="test-' in ln) == sorted(theirs[2:])
