"""Who may do what: everyone reads; operators drain and drill; approvers approve others' changes.

Entries are Slack user ids (U…, W…) or user-group ids (S…); groups are resolved through a port
and cached for a minute, so a change of on-call rotation takes effect without a restart. A lookup
that fails is remembered for half a minute, so a failing group costs one Slack call per 30 s,
not one per command.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from bot.fleet import AccessSettings

log = logging.getLogger(__name__)
GroupMembers = Callable[[str], Awaitable[set[str]]]
CACHE_SECONDS = 60.0
FAILURE_SECONDS = 30.0


class Access:
    def __init__(self, settings: AccessSettings, members: GroupMembers | None = None) -> None:
        self.settings = settings
        self.members = members
        self._cache: dict[str, tuple[float, set[str]]] = {}
        self._failed: dict[str, float] = {}  # group -> when its lookup last failed

    async def _in(self, user: str, entries: list[str]) -> bool:
        if user in entries:
            return True
        for group in (e for e in entries if e.startswith("S")):
            if self.members is None:
                continue
            cached = self._cache.get(group)
            if cached is None or time.monotonic() - cached[0] > CACHE_SECONDS:
                failed = self._failed.get(group)
                if failed is not None and time.monotonic() - failed < FAILURE_SECONDS:
                    continue  # it failed moments ago: refuse again without asking Slack
                try:
                    cached = (time.monotonic(), await self.members(group))
                except Exception as exc:
                    # Slack could not say: refuse rather than guess, and say why in the log.
                    log.warning("could not read user group %s: %s", group, exc)
                    self._failed[group] = time.monotonic()
                    continue
                self._failed.pop(group, None)
                self._cache[group] = cached
            if user in cached[1]:
                return True
        return False

    async def is_operator(self, user: str) -> bool:
        return await self._in(user, self.settings.operators)

    async def is_approver(self, user: str) -> bool:
        return await self._in(user, self.settings.approvers)

    def who(self, role: str) -> str:
        entries = self.settings.operators if role == "operator" else self.settings.approvers
        if not entries:
            return f"no {role}s are configured ([access] in failover.toml)"
        return ", ".join(f"<!subteam^{e}>" if e.startswith("S") else f"<@{e}>" for e in entries)
