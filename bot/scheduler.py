"""APScheduler's coarse jobs, and leadership: only the lease holder probes, reads and posts."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot import metrics, sender_loop
from bot.alerts import Alerts
from bot.db.engine import database_error
from bot.db.lease import LeaderLease
from bot.fleet import Fleet
from bot.health import ProbeLoop, Prober
from bot.home import Home
from bot.operations.drain import DrainDriver
from bot.operations.run import Drills
from bot.pages import PageSender
from bot.ports import ChannelNotifier
from bot.silences import Silences
from bot.watch import Watch

log = logging.getLogger(__name__)
SILENCE_EXPIRY = 5.0  # seconds between two looks for silences whose time is up


class Leadership:
    def __init__(
        self,
        fleet: Fleet,
        lease: LeaderLease,
        watch: Watch,
        alerts: Alerts,
        prober: Prober,
        drains: DrainDriver,
        drills: Drills,
        notifier: ChannelNotifier,
        home: Home,
        silences: Silences | None = None,
        pages: PageSender | None = None,
    ) -> None:
        self.pages = pages  # PagerDuty's outbox, sent by the leader on a task of its own
        self._pager: asyncio.Task[None] | None = None
        self.home = home
        self.silences = silences
        self.drains = drains
        self.drills = drills
        self.notifier = notifier
        self.fleet = fleet
        self.lease = lease
        self.watch = watch
        self.alerts = alerts
        self.loop = ProbeLoop(
            prober,
            fleet.origins,
            fleet.watch.probe_interval,
            watch.on_probe,
            confirmations=max(fleet.monitor.consecutive_down, fleet.monitor.consecutive_up),
        )
        self.leading = False
        self.stopping = False
        self._running: set[asyncio.Task[object]] = set()  # jobs in flight, waited for at stop
        self._sender: asyncio.Task[None] | None = None  # the alert sender, while leading
        self._failing: set[str] = set()  # jobs whose last run failed (logged once, not each run)
        self.scheduler = AsyncIOScheduler(timezone="UTC")

    def _job(
        self, name: str, seconds: float, call: Callable[[], Awaitable[object]], lead: bool = True
    ) -> None:
        async def run() -> None:
            if self.stopping or (lead and not self.leading):
                return
            task = asyncio.current_task()
            if task is not None:
                self._running.add(task)
            try:
                await self._guarded(name, call)
            finally:
                if task is not None:
                    self._running.discard(task)

        self.scheduler.add_job(
            run,
            "interval",
            seconds=seconds,
            id=name,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
        )

    async def start(self) -> None:
        """Start inside the running loop; try for the lease at once."""
        w = self.fleet.watch
        self._job("lease", max(1.0, w.lease_ttl / 3), self.renew, lead=False)
        self._job("cloudflare", w.cloudflare_poll, self.watch.poll_cloudflare)
        self._job("tick", 1.0, self.watch.tick)
        # Cloudflare's notifications stored by any instance (this one wakes it at once, below).
        self._job("notifications", 1.0, self.watch.apply_notifications)
        self._job("drains", 1.0, lambda: self.drains.drive(self.notifier))
        self._job("drills", 1.0, lambda: self.drills.drive(self.notifier))
        # The App Home at most every 10 s, from the watch's own state.
        self._job("home", 10.0, lambda: self.home.refresh(self.notifier, self.watch.monitor.state))
        # Silences end on their own at their time; the leader says so in the channel, once.
        self._job("silences", SILENCE_EXPIRY, self.expire_silences)
        self.scheduler.start()
        await self._guarded("lease", self.renew)

    async def _guarded(self, name: str, call: Callable[[], Awaitable[object]]) -> None:
        """Run a job; log when it starts failing and when it works again, not at every run (a
        lost database made each job fail each second: some 66 tracebacks in 20 s)."""
        try:
            await call()
        except asyncio.CancelledError:
            pass  # shutting down
        except Exception as exc:
            if name in self._failing:
                return
            self._failing.add(name)
            if (reason := database_error(exc)) is not None:
                log.error("job %s failing: the database is unavailable (%s)", name, reason)
            else:
                log.error("job %s failing", name, exc_info=exc)  # a bug: its traceback, once
        else:
            if name in self._failing:
                self._failing.discard(name)
                log.info("job %s works again", name)

    def notified(self) -> None:
        """A Cloudflare notification was stored by this instance: if it leads, apply it now
        rather than at the next second's job (another leader finds it at its own)."""
        if not self.leading or self.stopping:
            return
        task = asyncio.create_task(self._guarded("notifications", self.watch.apply_notifications))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def expire_silences(self) -> None:
        if self.silences is not None and await self.silences.expire():
            self.alerts.wake()  # the announcement goes now, not at the next sweep

    async def renew(self) -> None:
        try:
            held = await self.lease.acquire()
        except Exception:
            # Unrenewed, the lease lapses and another instance may take it: stop acting as the
            # leader now, not after the TTL, so that two never probe, post or drive at once.
            await self._step_down("could not renew the lease")
            raise
        if held and not self.leading:
            log.info("took the lease as %s: watching", self.lease.holder)
            await self.watch.load()
            self.leading = True
            metrics.LEADER.set(1)
            self.watch.wake = self.alerts.wake
            self._sender = asyncio.create_task(self.alerts.run())
            if self.pages is not None:
                self.watch.wake = self._wake_senders
                self._pager = asyncio.create_task(self.pages.run())
            self.loop.start()
            await self.watch.poll_cloudflare()
        elif not held:
            await self._step_down("lost the lease")

    async def _step_down(self, why: str) -> None:
        if not self.leading:
            return
        log.warning("%s: no longer watching", why)
        self.leading = False
        metrics.LEADER.set(0)
        await self.loop.stop()
        await self._stop_sender()
        await self.drills.stop()  # the new leader drives them; ours restore in their finally

    def _wake_senders(self) -> None:
        self.alerts.wake()
        if self.pages is not None:
            self.pages.wake()

    async def _stop_sender(self) -> None:
        """End the senders after the flush in progress (cancelled only if they hang)."""
        pager, self._pager = self._pager, None
        if self.pages is not None:
            await sender_loop.end(self.pages, pager)
        sender, self._sender = self._sender, None
        await sender_loop.end(self.alerts, sender)

    async def stop(self) -> None:
        """Stop cleanly: no new job runs, running ones reach their commit, then let go."""
        self.stopping = True
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        if self._running:
            await asyncio.wait(set(self._running), timeout=5.0)
        await self.loop.stop()
        await self._stop_sender()
        await self.drills.stop()  # a running drill restores the pool in its finally
        await self.loop.prober.aclose()
        if self.leading:
            self.leading = False
            try:
                await self.lease.release()
            except Exception as exc:
                # It expires by itself; a successor only waits for the TTL.
                log.warning(
                    "could not give up the lease (%s); it expires in %s s",
                    exc,
                    self.fleet.watch.lease_ttl,
                )
