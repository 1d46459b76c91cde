"""Probes of the gateway origins (bot/probe_http.py), with the semantics of Cloudflare's monitor.

An attempt is healthy when it answers an expected code with the expected body substring within
the monitor's timeout (a total deadline around the whole request). A failed attempt
is re-asked at once up to ``retries`` times, as Cloudflare does, and the last failure is kept as
evidence.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import math
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import NamedTuple

from bot import metrics
from bot.fleet import MonitorSettings, Origin
from bot.observations import Outcome, ProbeResult
from bot.probe_http import ConnectFailed, ProbeClient, ProbeError

log = logging.getLogger(__name__)
MAX_BODY = 64 * 1024  # a health body is small; never buffer an unbounded answer
MAX_CONCURRENCY = 64
BATCH = 0.025  # s: probes whose slots fall within one such tick start together (ProbeLoop)


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


class _Verdict(NamedTuple):
    outcome: Outcome
    reason: str
    code: int | None = None
    checks: dict[str, str] | None = None


class Prober:
    """Probes origins over one shared client (connections are reused while origins allow it).

    The client is bot/probe_http.py's: an HTTP/1.1 client on asyncio's protocols that does only
    what a probe needs, a fraction of aiohttp's CPU per probe (bench/monitor.py), which is what
    keeps 1,000 origins a second, each answer on a new connection, within a quarter of a core.
    Redirects are followed within the attempt's deadline. ``ssl_context`` verifies https origins
    (default: the system's certificate authorities).
    """

    def __init__(
        self,
        monitor: MonitorSettings,
        max_concurrency: int = MAX_CONCURRENCY,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.monitor = monitor
        self.client = ProbeClient(
            monitor.method, monitor.headers, max_body=MAX_BODY, ssl_context=ssl_context
        )
        self._slots = asyncio.Semaphore(max_concurrency)
        self._running: set[asyncio.Task[ProbeResult]] = set()
        self._timeout_reason = f"timeout after {monitor.timeout:g} s"
        # What classify asks of every answer, worked out once: the healthy path is the hot one.
        self._expected_body = monitor.expected_body.encode()
        self._expected_codes = frozenset(c for c in range(100, 600) if monitor.code_expected(c))
        self._healthy_reasons: dict[int, str] = {}

    async def aclose(self) -> None:
        # Probes still running (a status asked just before shutdown) end first, quietly.
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        await self.client.aclose()

    async def _attempt(self, url: str) -> _Verdict:
        m = self.monitor
        try:
            async with asyncio.timeout(m.timeout):
                answer = await self.client.get(url)
        except TimeoutError:
            return _Verdict(Outcome.TIMEOUT, self._timeout_reason)
        except ConnectFailed as exc:
            if exc.refused:
                return _Verdict(Outcome.REFUSED, "connection refused")
            return _Verdict(Outcome.CONNECTION_ERROR, exc.reason)
        except ProbeError as exc:
            return _Verdict(Outcome.CONNECTION_ERROR, exc.reason)
        code, body = answer.status, answer.body
        if code in self._expected_codes and self._expected_body in body:
            # classify's verdict on a healthy answer, without working out what it does not need.
            reason = self._healthy_reasons.get(code)
            if reason is None:
                reason = self._healthy_reasons[code] = f"HTTP {code}"
            return _Verdict(Outcome.HEALTHY, reason, code, _failing_checks(_parse_json(body)))
        outcome, reason, checks = classify(m, code, body)
        return _Verdict(outcome, reason, code, checks)

    async def probe(self, region: str, origin: Origin) -> ProbeResult:
        """One probe of ``origin``: up to 1 + retries attempts, stopping at the first healthy."""
        url = origin.url + self.monitor.path
        async with self._slots:
            at = datetime.now(UTC)
            attempt, reset_retried = 0, False
            while True:
                attempt += 1
                started = time.perf_counter()
                verdict = await self._attempt(url)
                latency = time.perf_counter() - started
                if verdict.reason.startswith("connection reset") and not reset_retried:
                    # A pooled connection the server closed meanwhile: ask again once, for free.
                    attempt, reset_retried = attempt - 1, True
                    continue
                if verdict.outcome is Outcome.HEALTHY or attempt > self.monitor.retries:
                    break
            metrics.origin_probes(region, origin.name).observe(latency, verdict.outcome)
            return ProbeResult(
                region=region,
                origin=origin.name,
                url=origin.url,
                outcome=verdict.outcome,
                reason=verdict.reason,
                at=at,
                latency=latency,
                status_code=verdict.code,
                failing_checks=verdict.checks if verdict.checks is not None else {},
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
    Probes start on a coarse clock (``BATCH``, at most a fortieth of the interval): those whose
    slots fall within one tick start in one turn of the event loop, which at 1,000 origins a
    second costs a third less CPU than waking once per slot (bench/monitor.py).
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
        # Slots are kept to within this (s): a quarter of the tolerance before a slot is late.
        self._quantum = min(BATCH, interval / 40)

    def start(self) -> None:
        # Python's full collections walk every object the process holds (a served bot's imports
        # alone are some 200,000), stalling every slot for up to a tenth of a second each time.
        # What exists when probing starts (modules, settings, the fleet) lives as long as the
        # process: freeze it out of those walks, which then see only what probing allocates
        # (once collected, so that no garbage of the start-up is kept for good).
        gc.collect()
        gc.freeze()
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
        quantum = self._quantum
        while True:
            # Wake on the next tick of a coarse clock rather than at the slot itself: the origins
            # whose slots fall within one tick then start together, in one turn of the event loop
            # and one wait for the network, which costs a fraction of a turn per probe.
            wake = math.ceil(slot / quantum) * quantum
            await asyncio.sleep(max(0.0, wake - time.monotonic()))
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
