"""The loop both outbox senders (Slack's alerts, PagerDuty's pages) run on the lease holder:
flush when woken, else every ``sweep`` seconds; a failing flush is logged once (not at every
sweep) and once more when it works again; ``stop`` ends it after the flush in progress."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod

from bot.db.engine import database_error


class SenderLoop(ABC):
    name = "sender"  # "the <name> failed", in the log
    log = logging.getLogger(__name__)  # each sender logs under its own module's name

    def __init__(self) -> None:
        self._wake = asyncio.Event()
        self._stopping = False

    @abstractmethod
    async def flush(self) -> int:
        """Send what is due; the number sent."""

    def sweep(self) -> float:
        """Seconds between two flushes when nothing wakes the loop."""
        return 1.0

    def wake(self) -> None:
        """Something was committed to the outbox: send it now."""
        self._wake.set()

    async def run(self) -> None:
        self._stopping = False
        failing = False
        while not self._stopping:
            self._wake.clear()  # a wake during the flush runs the next one at once
            try:
                await self.flush()
            except Exception as exc:
                if not failing and (reason := database_error(exc)) is not None:
                    what = f"the {self.name} failed: the database is unavailable"
                    self.log.error("%s (%s)", what, reason)
                elif not failing:
                    self.log.exception("the %s failed; it carries on", self.name)
                failing = True
            else:
                if failing:
                    self.log.info("the %s works again", self.name)
                failing = False
            if self._stopping:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.sweep())

    def stop(self) -> None:
        """End ``run`` after the flush in progress (never in the middle of a database call)."""
        self._stopping = True
        self._wake.set()


async def end(loop: SenderLoop, task: asyncio.Task[None] | None, grace: float = 5.0) -> None:
    """Stop ``loop`` and wait for its ``task``; cancelled only if it hangs past ``grace``."""
    if task is None:
        return
    loop.stop()
    _, late = await asyncio.wait([task], timeout=grace)
    for hung in late:
        hung.cancel()
    await asyncio.gather(task, return_exceptions=True)
