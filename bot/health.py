"""Probes of the gateway origins (aiohttp's client), with the semantics of Cloudflare's monitor.

An attempt is healthy when it answers an expected code with the expected body substring within
the monitor's timeout (a total deadline around the whole request). A failed attempt
is re-asked at once up to ``retries`` times, as Cloudflare does, and the last failure is kept as
evidence.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiohttp

from bot import metrics
from bot.fleet import MonitorSettings, Origin
from bot.observations import Outcome, ProbeResult

log = logging.getLogger(__name__)
MAX_BODY = 64 * 1024  # a health body is small; never buffer an unbounded answer
MAX_CONCURRENCY = 64


def _failing_checks(payload: object) -> dict[str, str]:
    if isinstance(payload, dict) and isinstance(payload.get("checks"), dict):
        return {k: str(v) for k, v in payload["checks"].items() if v != "ok"}
    return {}


def _parse_json(body: bytes) -> object:
    try:
        return json.loads(body)
    except ValueError:
        return None


def classify(
    monitor: MonitorSettings, code: int, body: bytes
) -> tuple[Outcome, str, dict[str, str]]:
    """The verdict on one answer: outcome, a reason an operator reads, the failing checks."""
    payload = _parse_json(body)
    checks = _failing_checks(payload)
    named = ", ".join(f"{k} {v}" for k, v in checks.items())
    if not monitor.code_expected(code):
        if named:
            return Outcome.HTTP_STATUS, f"HTTP {code}: {named}", checks
        if code >= 500 and payload is None and body.strip():
            return Outcome.HTTP_STATUS, f"HTTP {code} (body is not JSON)", checks
        return Outcome.HTTP_STATUS, f"HTTP {code}", checks
    if monitor.expected_body.encode() not in body:
        if payload is None:
            return Outcome.BAD_JSON, f"bad JSON in an HTTP {code} answer", checks
        status = payload.get("status") if isinstance(payload, dict) else None
        said = f" (status {status!r})" if status is not None else ""
        detail = f": {named}" if named else ""
        return (
            Outcome.BODY_MISMATCH,
            f"body lacks {monitor.expected_body}{said}{detail}",
            checks,
        )
    return Outcome.HEALTHY, f"HTTP {code}", checks


@dataclass(frozen=True)
class _Verdict:
    outcome: Outcome
    reason: str
    code: int | None = None
    checks: dict[str, str] = field(default_factory=dict)


class Prober:
    """Probes origins over one shared httpx client (connections are reused between probes)."""

    def __init__(self, monitor: MonitorSettings, max_concurrency: int = MAX_CONCURRENCY) -> None:
        self.monitor = monitor
        # aiohttp's client: its C parser costs a tenth of httpx's per probe (bench/monitor.py),
        # which is what keeps 1,000 origins a second on one core. Redirects are followed.
        self.client = aiohttp.ClientSession(
            headers=monitor.headers,
            connector=aiohttp.TCPConnector(limit=max_concurrency, ttl_dns_cache=300),
            auto_decompress=True,
        )
        self._slots = asyncio.Semaphore(max_concurrency)
        self._running: set[asyncio.Task[ProbeResult]] = set()

    async def aclose(self) -> None:
        # Probes still running (a status asked just before shutdown) end first, quietly.
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        await self.client.close()

    async def _attempt(self, url: str) -> _Verdict:
        m = self.monitor
        try:
            async with asyncio.timeout(m.timeout):
                async with self.client.request(m.method, url + m.path) as resp:
                    body = await resp.content.read(MAX_BODY)
                    code = resp.status
            outcome, reason, checks = classify(m, code, body)
            return _Verdict(outcome, reason, code, checks)
        except TimeoutError:
            return _Verdict(Outcome.TIMEOUT, f"timeout after {m.timeout:g} s")
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, ConnectionRefusedError):
                return _Verdict(Outcome.REFUSED, "connection refused")
            return _Verdict(Outcome.CONNECTION_ERROR, f"cannot connect: {exc.os_error or exc}")
        except (
            aiohttp.ServerDisconnectedError,
            aiohttp.ClientOSError,
            aiohttp.ClientPayloadError,
        ) as exc:
            return _Verdict(Outcome.CONNECTION_ERROR, f"connection reset ({type(exc).__name__})")
        except aiohttp.ClientError as exc:
            name = type(exc).__name__
            return _Verdict(Outcome.CONNECTION_ERROR, f"{name}: {exc}" if str(exc) else name)

    async def probe(self, region: str, origin: Origin) -> ProbeResult:
        """One probe of ``origin``: up to 1 + retries attempts, stopping at the first healthy."""
        async with self._slots:
            at = datetime.now(UTC)
            attempt, reset_retried = 0, False
            while True:
                attempt += 1
                started = time.perf_counter()
                verdict = await self._attempt(origin.url)
                latency = time.perf_counter() - started
                if verdict.reason.startswith("connection reset") and not reset_retried:
                    # A pooled connection the server closed meanwhile: ask again once, for free.
                    attempt, reset_retried = attempt - 1, True
                    continue
                if verdict.outcome is Outcome.HEALTHY or attempt > self.monitor.retries:
                    break
            metrics.PROBE_SECONDS.labels(region, origin.name).observe(latency)
            metrics.PROBE_RESULTS.labels(region, origin.name, verdict.outcome.value).inc()
            return ProbeResult(
                region=region,
                origin=origin.name,
                url=origin.url,
                outcome=verdict.outcome,
                reason=verdict.reason,
                at=at,
                latency=latency,
                status_code=verdict.code,
                failing_checks=verdict.checks,
                attempts=attempt,
            )

    async def probe_all(
        self, targets: Iterable[tuple[str, Origin]], budget: float | None = None
    ) -> list[ProbeResult]:
        """Probe every (region, origin) concurrently; those not done within ``budget`` s say so."""
        pairs = list(targets)
        tasks = [asyncio.create_task(self.probe(r, o)) for r, o in pairs]
        self._running.update(tasks)
        for task in tasks:
            task.add_done_callback(self._running.discard)
        if not tasks:
            return []
        done, pending = await asyncio.wait(tasks, timeout=budget)
        for task in pending:
            task.cancel()
        results: list[ProbeResult] = []
        now = datetime.now(UTC)
        for (region, origin), task in zip(pairs, tasks, strict=True):
            if task in done:
                results.append(task.result())
            else:
                results.append(
                    ProbeResult(
                        region=region,
                        origin=origin.name,
                        url=origin.url,
                        outcome=Outcome.NO_ANSWER,
                        reason=f"no answer within {budget:g} s",
                        at=now,
                    )
                )
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        return results


class ProbeLoop:
    """Probes every origin once per interval, each in its own slot spread over the interval.

    Each result goes to ``on_result`` as it arrives; when that asks for it (a change seen but not
    yet confirmed), the origin is probed again at once rather than an interval later. A slot the
    loop could not keep by a tenth of the interval is counted late; one missed entirely, dropped.
    """

    def __init__(
        self,
        prober: Prober,
        targets: list[tuple[str, Origin]],
        interval: float,
        on_result: Callable[[ProbeResult], Awaitable[bool]],
        confirmations: int = 2,
    ) -> None:
        self.prober = prober
        self.targets = targets
        self.interval = interval
        self.on_result = on_result
        self.confirmations = confirmations
        self.late = 0
        self.dropped = 0
        self.probes = 0
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        start = time.monotonic()
        n = max(1, len(self.targets))
        self._tasks = [
            asyncio.create_task(self._origin(start + i * self.interval / n, region, origin))
            for i, (region, origin) in enumerate(self.targets)
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    @property
    def running(self) -> bool:
        return any(not t.done() for t in self._tasks)

    async def _origin(self, slot: float, region: str, origin: Origin) -> None:
        while True:
            await asyncio.sleep(max(0.0, slot - time.monotonic()))
            if time.monotonic() - slot > self.interval / 10:
                self.late += 1
                metrics.PROBES_LATE.set(self.late)
            try:
                again = await self._probe(region, origin)
                for _ in range(self.confirmations):
                    if not again:
                        break
                    again = await self._probe(region, origin)
            except Exception:
                log.exception("probe of %s failed unexpectedly", origin.name)
            slot += self.interval
            now = time.monotonic()
            if now > slot + self.interval / 10:
                missed = int((now - slot) // self.interval) + 1
                self.dropped += missed
                metrics.PROBES_DROPPED.set(self.dropped)
                slot += missed * self.interval

    async def _probe(self, region: str, origin: Origin) -> bool:
        self.probes += 1
        return await self.on_result(await self.prober.probe(region, origin))
