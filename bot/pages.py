"""The page sender: the Page outbox sent to PagerDuty in order by the lease holder.

Each page is marked in its own transaction as soon as PagerDuty answers, so a crash between the
answer and the mark repeats at most one event (PagerDuty deduplicates it by its dedup_key anyway).
PagerDuty unreachable, rate limiting (429) or failing (5xx) is retried with exponential backoff,
or after its Retry-After when it sends one; the pages behind it wait, so an incident's trigger
always goes before its resolve. A 400 means the event itself is invalid: it is marked failed
with PagerDuty's reason, logged once, never retried
(https://developer.pagerduty.com/docs/events-api-v2-overview, "Response Codes & Retry Logic").
The sender runs on its own task: the watch and the Slack posts never wait for PagerDuty.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.engine import database_error
from bot.db.models import Page
from bot.pagerduty import Delivery, EventsApi
from bot.paging import PagingPolicy, event_body

log = logging.getLogger(__name__)
SWEEP = 1.0  # seconds between two looks at the outbox when nothing wakes the sender
FIRST_BACKOFF = 2.0  # seconds before the first retry; doubled at each failure...
MAX_BACKOFF = 300.0  # ...up to 5 minutes (for a 429: "preferably with a backoff of a few minutes")


def backoff(attempts: int, first: float = FIRST_BACKOFF, cap: float = MAX_BACKOFF) -> float:
    """Seconds to wait after the ``attempts``-th failure in a row: first, 2 x first, 4 x ..."""
    return float(min(cap, first * 2.0 ** max(0, attempts - 1)))


class PageSender:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        api: EventsApi,
        policy: PagingPolicy,
        clock: Callable[[], datetime],
        *,
        first_backoff: float = FIRST_BACKOFF,
        max_backoff: float = MAX_BACKOFF,
    ) -> None:
        self.sessions = sessions
        self.api = api
        self.policy = policy
        self.clock = clock
        self.first_backoff = first_backoff
        self.max_backoff = max_backoff
        self._wake = asyncio.Event()
        self._stopping = False
        self._unreachable = False  # logged when PagerDuty starts failing and when it is back

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        self._stopping = False
        failing = False
        while not self._stopping:
            self._wake.clear()
            try:
                await self.flush()
            except Exception as exc:
                if not failing and (reason := database_error(exc)) is not None:
                    log.error("the page sender failed: the database is unavailable (%s)", reason)
                elif not failing:
                    log.exception("the page sender failed; it carries on")
                failing = True
            else:
                failing = False
            if self._stopping:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=SWEEP)

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def flush(self) -> int:
        """Send what is due, in order; returns how many events PagerDuty accepted."""
        async with self.sessions() as session:
            pending = list(
                await session.scalars(select(Page).where(Page.sent_at.is_(None)).order_by(Page.id))
            )
        accepted = 0
        for page in pending:
            now = self.clock()
            if page.next_attempt_at is not None and page.next_attempt_at > now:
                return accepted  # backing off: what follows waits behind it, in order
            key = self.policy.key_for(page.region)
            if key is None:
                await self._finish(page.id, "failed: no routing key for its region")
                continue
            delivery = await self.api.send(event_body(page, key, self.policy.client_url))
            if delivery.accepted:
                await self._finish(page.id, "accepted")
                accepted += 1
                if self._unreachable:
                    log.info("PagerDuty accepts events again")
                    self._unreachable = False
            elif delivery.retry:
                await self._retry_later(page.id, delivery)
                return accepted
            else:
                log.error(
                    "PagerDuty refused the %s of incident %s (%s): not retried",
                    page.action,
                    page.incident_id,
                    delivery.reason,
                )
                await self._finish(page.id, f"failed: {delivery.reason}")
        return accepted

    async def _finish(self, page_id: int, result: str) -> None:
        async with self.sessions.begin() as session:
            page = await session.get(Page, page_id)
            if page is not None:
                page.sent_at, page.result = self.clock(), result[:128]
                page.attempts += 1
                page.next_attempt_at = None

    async def _retry_later(self, page_id: int, delivery: Delivery) -> None:
        async with self.sessions.begin() as session:
            page = await session.get(Page, page_id)
            if page is None:
                return
            page.attempts += 1
            wait = delivery.retry_after
            if wait is None:
                wait = backoff(page.attempts, self.first_backoff, self.max_backoff)
            page.next_attempt_at = self.clock() + timedelta(seconds=wait)
            page.result = f"retrying: {delivery.reason}"[:128]
            if not self._unreachable:
                log.warning(
                    "PagerDuty did not take the %s of incident %s (%s): retrying in %.0f s",
                    page.action,
                    page.incident_id,
                    delivery.reason,
                    wait,
                )
            self._unreachable = True
