"""The ports: what services need from the outside world, in the domain's terms.

Adapters implement them: ``bot.cloudflare_api.cloudflare.CloudflareLoadBalancer`` (the official
Cloudflare SDK), ``bot.slack.notifier.SlackNotifier`` (Slack's Web API), ``bot.db.audit``'s
``SqlAuditTrail``; tests use the fakes in tests/fakes.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from bot.invocation import Invocation
from bot.lbmodel import (
    HealthEvent,
    LiveView,
    LoadBalancerInfo,
    MonitorInfo,
    PoolHealth,
    PoolInfo,
)
from bot.reads import (
    Dashboard,
    EntryView,
    IncidentView,
    OperationView,
    PublicCheck,
    SilenceNotice,
)


class LoadBalancer(Protocol):
    async def pools(self) -> list[PoolInfo]: ...

    async def pool(self, pool_id: str) -> PoolInfo: ...

    async def pool_health(self, pool_id: str) -> PoolHealth: ...

    async def load_balancer(self, hostname: str) -> LoadBalancerInfo: ...

    async def monitor(self, monitor_id: str) -> MonitorInfo: ...

    async def monitors(self) -> list[MonitorInfo]: ...

    async def live_view(self, hostname: str) -> LiveView: ...

    async def health_events(
        self, since: datetime | None = None, pool_id: str | None = None
    ) -> list[HealthEvent]:
        """Raises ProviderAuthError when the token may not read them; callers carry on."""
        ...

    async def set_pool_enabled(self, pool_id: str, enabled: bool) -> PoolInfo: ...

    async def set_origin_enabled(self, pool_id: str, origin: str, enabled: bool) -> PoolInfo: ...

    async def aclose(self) -> None: ...


class UsersView(Protocol):
    """What users get from the public hostname, from each vantage point (bot.vantages)."""

    async def check(self, budget: float) -> list[PublicCheck]: ...


class Notifier(Protocol):
    """How services hand incidents to the channel, as read models (no rendering)."""

    async def post_incident(self, channel: str, incident: IncidentView) -> str:
        """Post the incident's message; returns its ts."""
        ...

    async def update_incident(self, channel: str, ts: str, incident: IncidentView) -> None: ...

    async def post_thread(
        self,
        channel: str,
        thread_ts: str,
        incident: IncidentView,
        entries: Sequence[EntryView],
        *,
        reminder: bool = False,
    ) -> str: ...

    async def post_silence(self, channel: str, notice: SilenceNotice) -> str:
        """Tell the channel a region was silenced or unsilenced, or its silence expired."""
        ...


class OperationNotifier(Protocol):
    async def post_operation(self, channel: str, op: OperationView) -> str: ...

    async def update_operation(self, channel: str, ts: str, op: OperationView) -> None: ...

    async def post_operation_note(self, channel: str, thread_ts: str, text: str) -> str: ...


class HomePublisher(Protocol):
    async def publish_home(self, user: str, dashboard: Dashboard, at: datetime) -> None: ...


class ChannelNotifier(Notifier, OperationNotifier, HomePublisher, Protocol):
    """All the channel's posts: what the lease holder's jobs are given."""


class AuditTrail(Protocol):
    async def record_command(
        self,
        invocation: Invocation,
        outcome: str,
        detail: str,
        error_id: str | None,
        seconds: float,
    ) -> None: ...
