"""The page sender: the Page outbox sent to PagerDuty in order by the lease holder.

Each page is marked in its own transaction as soon as PagerDuty answers, so a crash between the
answer and the mark repeats at most one event (PagerDuty deduplicates it by its dedup_key anyway).
PagerDuty unreachable, rate limiting (429) or failing (5xx) is retried with exponential backoff,
or after its Retry-After when it sends one (capped at the longest backoff); the pages behind it
wait, so an incident's trigger always goes before its resolve. Another 4xx (a proxy, a wrong URL)
is retried the same way but logged as an error. A 400 means the event itself is invalid: it is
marked failed with PagerDuty's reason, logged once, never retried
(https://developer.pagerduty.com/docs/events-api-v2-overview, "Response Codes & Retry Logic").
The sender runs on its own task: the watch and the Slack posts never wait for PagerDuty.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import Incident, Page
from bot.incidents import owe
from bot.pagerduty import Delivery, EventsApi
from bot.paging import PagingPolicy, event_body
from bot.sender_loop import SenderLoop

log = logging.getLogger(__name__)
FIRST_BACKOFF = 2.0  # seconds before the first retry; doubled at each failure...
MAX_BACKOFF = 300.0  # ...up to 5 minutes (for a 429: "preferably with a backoff of a few minutes")
SKIPPED = "skipped: resolved before delivery"


def backoff(attempts: int, first: float = FIRST_BACKOFF, cap: float = MAX_BACKOFF) -> float:
    """Seconds to wait after the ``attempts``-th failure in a row: first, 2 x first, 4 x ..."""
    return float(min(cap, first * 2.0 ** max(0, attempts - 1)))


class PageSender(SenderLoop):
    name = "page sender"
    log = log

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
        super().__init__()
        self.sessions = sessions
        self.api = api
        self.policy = policy
        self.clock = clock
        self.first_backoff = first_backoff
        self.max_backoff = max_backoff
        self._unreachable = False  # logged when PagerDuty starts failing and when it is back

    async def flush(self) -> int:
        """Send what is due, in order; returns how many events PagerDuty accepted."""
        async with self.sessions() as session:
            pending = list(
                await session.scalars(select(Page).where(Page.sent_at.is_(None)).order_by(Page.id))
            )
        accepted = 0
        skipped = await self._skip_overtaken(pending)
        for page in pending:
            if page.id in skipped:
                continue
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

    async def _skip_overtaken(self, pending: list[Page]) -> set[int]:
        """An incident whose first trigger never went out (backing off, or queued behind one that
        is) and whose resolve is already queued: paging someone now for an incident that is over
        would only wake them, so neither is sent; both, and whatever lies between, are marked."""
        resolving = {p.dedup_key for p in pending if p.action == "resolve"}
        skipped: set[int] = set()
        for key in resolving:
            mine = [p for p in pending if p.dedup_key == key]
            first = next((p for p in mine if p.action == "trigger"), None)
            if first is None:
                continue
            async with self.sessions.begin() as session:
                delivered = await session.scalar(
                    select(Page.id)
                    .where(
                        Page.dedup_key == key,
                        Page.action == "trigger",
                        Page.result == "accepted",
                    )
                    .limit(1)
                )
                if delivered is not None:
                    continue  # PagerDuty has the alert: its resolve must go out
                for page in mine:
                    stored = await session.get(Page, page.id)
                    if stored is not None:
                        stored.sent_at, stored.next_attempt_at = self.clock(), None
                        stored.result = SKIPPED
                        skipped.add(page.id)
                if await self._first_trigger(session, first):
                    await self._owe_update(session, first.incident_id)
            log.info(
                "incident %s was over before its page was delivered: not paged", first.incident_id
            )
        return skipped

    @staticmethod
    async def _first_trigger(session: AsyncSession, page: Page) -> bool:
        if page.action != "trigger":
            return False
        first = await session.scalar(
            select(Page.id)
            .where(Page.incident_id == page.incident_id, Page.action == "trigger")
            .order_by(Page.id)
            .limit(1)
        )
        return first == page.id

    async def _owe_update(self, session: AsyncSession, incident_id: int) -> None:
        """The incident's message shows what became of its page: it is updated (the alert
        sender sweeps its outbox every second)."""
        incident = await session.get(Incident, incident_id)
        if incident is not None:
            owe(session, incident, "update", self.clock())

    async def _finish(self, page_id: int, result: str) -> None:
        async with self.sessions.begin() as session:
            page = await session.get(Page, page_id)
            if page is not None:
                page.sent_at, page.result = self.clock(), result[:128]
                page.attempts += 1
                page.next_attempt_at = None
                if await self._first_trigger(session, page):
                    await self._owe_update(session, page.incident_id)

    async def _retry_later(self, page_id: int, delivery: Delivery) -> None:
        async with self.sessions.begin() as session:
            page = await session.get(Page, page_id)
            if page is None:
                return
            page.attempts += 1
            wait = delivery.retry_after
            if wait is None:
                wait = backoff(page.attempts, self.first_backoff, self.max_backoff)
            wait = min(wait, self.max_backoff)  # a Retry-After of a day would silence paging
            page.next_attempt_at = self.clock() + timedelta(seconds=wait)
            page.result = f"retrying: {delivery.reason}"[:128]
            if page.attempts == 1 and await self._first_trigger(session, page):
                await self._owe_update(session, page.incident_id)  # "retrying, HTTP 503"
            if not self._unreachable and delivery.misdirected:
                log.error(
                    "PagerDuty's Events API answered the %s of incident %s with %s: check "
                    "PAGERDUTY_EVENTS_URL, the routing key and any proxy; retrying in %.0f s",
                    page.action,
                    page.incident_id,
                    delivery.reason,
                    wait,
                )
            elif not self._unreachable:
                log.warning(
                    "PagerDuty did not take the %s of incident %s (%s): retrying in %.0f s",
                    page.action,
                    page.incident_id,
                    delivery.reason,
                    wait,
                )
            self._unreachable = True
