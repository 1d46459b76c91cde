"""The LoadBalancer port on the official SDK (``cloudflare.AsyncCloudflare``).

Ids are passed by keyword so the same calls run on SDK 4.3+ and 5.x. What the SDK's models get
wrong is read raw: ``healthy`` and ``failure_reason`` from the models' extra fields (via
``to_dict``), pool health and health events through the client's generic ``get``. Every SDK
error becomes a ProviderError whose message an operator can act on.

Every answer's rate-limit headers feed the API budget (bot.cloudflare_api.budget), which decides
what may still be sent. Restores (enabling a pool or an origin) are never held back by the read
circuit breaker and are sent once, without the SDK's retries: their callers retry them on their
own policy (bot.cloudflare_api.retry), so that a pool comes back as soon as Cloudflare answers.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import cloudflare
import httpx

from bot import metrics
from bot.cloudflare_api.breaker import CircuitBreaker
from bot.cloudflare_api.budget import ApiBudget, BudgetExhausted, Spend
from bot.cloudflare_api.convert import (
    event_from_json,
    lb_from_json,
    monitor_from_json,
    pool_from_json,
    pool_health_from_json,
)
from bot.errors import (
    ProviderAuthError,
    ProviderError,
    ProviderNotFound,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnavailable,
)
from bot.lbmodel import HealthEvent, LiveView, LoadBalancerInfo, MonitorInfo, PoolHealth, PoolInfo

log = logging.getLogger(__name__)
T = TypeVar("T")

# Each attempt must leave room for a chat reply; the SDK retries twice more on 429/5xx/timeouts.
TIMEOUT = 4.0
MAX_RETRIES = 2
# The only origin keys Cloudflare accepts back on a PATCH of a pool's origins.
WRITABLE_ORIGIN_KEYS = (
    "name",
    "address",
    "enabled",
    "weight",
    "header",
    "virtual_network_id",
    "port",
)


def _dump(model: Any) -> dict[str, Any]:
    if model is None:
        # The SDK returns None for HTTP 200 with success:false.
        raise ProviderError("Cloudflare answered without success and gave no reason")
    if isinstance(model, dict):
        return model
    dumped: dict[str, Any] = model.to_dict()
    return dumped


def _result(envelope: Any) -> Any:
    if not isinstance(envelope, dict) or not envelope.get("success", False):
        errors = envelope.get("errors") if isinstance(envelope, dict) else None
        raise ProviderError(f"Cloudflare answered without success: {errors or envelope!r}")
    return envelope.get("result")


def _token_only(client: cloudflare.AsyncCloudflare, api_token: str) -> cloudflare.AsyncCloudflare:
    """``client`` authenticating with ``api_token`` alone.

    Given None, the SDK's constructor (and ``with_options``, which builds a new client) reads
    CLOUDFLARE_EMAIL, CLOUDFLARE_API_KEY and CLOUDFLARE_API_USER_SERVICE_KEY from the environment,
    and its ``auth_headers`` send the e-mail and the key before the token: an empty
    CLOUDFLARE_EMAIL leaves no usable credential and every call raises a TypeError. The settings
    refuse those variables; this keeps the token the only credential whatever the environment.
    """
    client.api_token = api_token
    client.api_email = None
    client.api_key = None
    client.user_service_key = None
    return client


class CloudflareLoadBalancer:
    def __init__(
        self,
        api_token: str,
        account_id: str,
        zone_id: str,
        base_url: str | None = None,
        timeout: float = TIMEOUT,
        budget: ApiBudget | None = None,
    ) -> None:
        self.account_id = account_id
        self.zone_id = zone_id
        self.timeout = timeout
        self.breaker = CircuitBreaker(threshold=5, cooldown=30.0)
        self.budget = budget or ApiBudget()
        http_timeout = httpx.Timeout(timeout, connect=min(timeout, 2.0))
        self.client = _token_only(
            cloudflare.AsyncCloudflare(
                api_token=api_token,
                base_url=base_url,
                timeout=http_timeout,
                max_retries=MAX_RETRIES,
                # Every answer, retries and 429s included, passes its rate-limit headers on.
                http_client=cloudflare.DefaultAsyncHttpxClient(
                    timeout=http_timeout, event_hooks={"response": [self._observe]}
                ),
            ),
            api_token,
        )
        # A restore is one attempt: its caller's retry policy decides when to try again.
        self.restore_client = _token_only(self.client.with_options(max_retries=0), api_token)

    async def aclose(self) -> None:
        await self.client.close()

    async def _observe(self, response: httpx.Response) -> None:
        self.budget.observe(response.status_code, response.headers)

    # ------------------------------------------------------------------ errors

    async def _call(
        self,
        what: str,
        scope: str,
        permission: str,
        call: Callable[[], Awaitable[T]],
        spend: Spend = Spend.READ,
    ) -> T:
        """Run one SDK call; its errors become ProviderErrors naming ``what`` and the fix.

        The budget may refuse it first (a block, or a reserve kept for restores); the circuit
        breaker may refuse anything but a restore.
        """
        try:
            self.budget.check(spend, what)
        except BudgetExhausted:
            metrics.CLOUDFLARE_CALLS.labels("budget").inc()
            raise
        restore = spend is Spend.RESTORE
        if not restore and not self.breaker.allow():
            metrics.CLOUDFLARE_CALLS.labels("circuit_open").inc()
            raise ProviderUnavailable(
                f"Cloudflare failed {self.breaker.threshold} times in a row, so the bot is not "
                f"calling it for a while (next try in {self.breaker.retry_in():.0f} s); "
                f"{what} did not happen"
            )
        try:
            result = await self._translated(
                what, scope, permission, call, 0 if restore else MAX_RETRIES
            )
        except Exception as exc:
            metrics.CLOUDFLARE_CALLS.labels(type(exc).__name__).inc()
            if isinstance(exc, (ProviderUnavailable, ProviderRateLimited)):
                self.breaker.failure()  # the API's trouble, not a refusal of this request
            raise
        metrics.CLOUDFLARE_CALLS.labels("ok").inc()
        self.breaker.success()
        return result

    async def _translated(
        self,
        what: str,
        scope: str,
        permission: str,
        call: Callable[[], Awaitable[T]],
        retries: int = MAX_RETRIES,
    ) -> T:
        retried = f"; retried {_times(retries)}" if retries else ""
        try:
            return await call()
        except cloudflare.AuthenticationError:
            raise ProviderAuthError(
                f"Cloudflare rejected the API token while {what}: check CLOUDFLARE_API_TOKEN"
            ) from None
        except cloudflare.PermissionDeniedError:
            raise ProviderAuthError(
                f"the API token lacks {permission} on {scope} (needed for {what})"
            ) from None
        except cloudflare.NotFoundError:
            raise ProviderNotFound(
                f"Cloudflare found nothing while {what}: check the ids in CLOUDFLARE_ACCOUNT_ID, "
                "CLOUDFLARE_ZONE_ID and failover.toml"
            ) from None
        except cloudflare.RateLimitError:
            wait = self.budget.blocked_for()
            until = f" (it blocks calls for {wait:.0f} s)" if wait >= 1 else ""
            raise BudgetExhausted(
                f"Cloudflare rate-limited us while {what}{retried}{until}",
                wait,
                f"Cloudflare rate-limited the bot{until}",
            ) from None
        except cloudflare.InternalServerError as exc:
            raise ProviderUnavailable(
                f"Cloudflare failed (HTTP {exc.status_code}) while {what}{retried}"
            ) from None
        except cloudflare.APITimeoutError:
            raise ProviderUnavailable(
                f"Cloudflare did not answer within {self.timeout:g} s while {what}{retried}"
            ) from None
        except cloudflare.APIConnectionError:
            raise ProviderUnavailable(
                f"cannot reach Cloudflare at {self.client.base_url} while {what}"
            ) from None
        except cloudflare.APIStatusError as exc:
            raise ProviderRejected(
                f"Cloudflare refused {what} (HTTP {exc.status_code}): {_first_error(exc)}"
            ) from None

    @property
    def _account(self) -> str:
        return f"account {self.account_id}"

    @property
    def _zone(self) -> str:
        return f"zone {self.zone_id}"

    # ------------------------------------------------------------------ reads

    async def pools(self) -> list[PoolInfo]:
        async def call() -> list[PoolInfo]:
            page = await self.client.load_balancers.pools.list(account_id=self.account_id)
            return [pool_from_json(_dump(p)) for p in page.result]

        return await self._call(
            "reading the pools", self._account, "Load Balancing: Monitors and Pools Read", call
        )

    async def pool(self, pool_id: str) -> PoolInfo:
        async def call() -> PoolInfo:
            got = await self.client.load_balancers.pools.get(pool_id, account_id=self.account_id)
            return pool_from_json(_dump(got))

        return await self._call(
            f"reading pool {pool_id}",
            self._account,
            "Load Balancing: Monitors and Pools Read",
            call,
        )

    async def pool_health(self, pool_id: str) -> PoolHealth:
        path = f"/accounts/{self.account_id}/load_balancers/pools/{pool_id}/health"

        async def call() -> PoolHealth:
            return pool_health_from_json(_result(await self.client.get(path, cast_to=object)))

        return await self._call(
            f"reading the health of pool {pool_id}",
            self._account,
            "Load Balancing: Monitors and Pools Read",
            call,
        )

    async def load_balancer(self, hostname: str) -> LoadBalancerInfo:
        async def call() -> LoadBalancerInfo:
            page = await self.client.load_balancers.list(zone_id=self.zone_id)
            for lb in page.result:
                data = _dump(lb)
                if data.get("name") == hostname:
                    return lb_from_json(data)
            names = ", ".join(str(_dump(lb).get("name")) for lb in page.result) or "none"
            raise ProviderNotFound(
                f"zone {self.zone_id} has no load balancer for {hostname} (it has: {names})"
            )

        return await self._call(
            "reading the load balancer", self._zone, "Load Balancers: Read", call
        )

    async def monitor(self, monitor_id: str) -> MonitorInfo:
        async def call() -> MonitorInfo:
            got = await self.client.load_balancers.monitors.get(
                monitor_id, account_id=self.account_id
            )
            return monitor_from_json(_dump(got))

        return await self._call(
            f"reading monitor {monitor_id}",
            self._account,
            "Load Balancing: Monitors and Pools Read",
            call,
        )

    async def monitors(self) -> list[MonitorInfo]:
        async def call() -> list[MonitorInfo]:
            page = await self.client.load_balancers.monitors.list(account_id=self.account_id)
            return [monitor_from_json(_dump(m)) for m in page.result]

        return await self._call(
            "reading the monitors", self._account, "Load Balancing: Monitors and Pools Read", call
        )

    async def verify_token(self) -> str:
        """The API token's status ("active", "disabled" or "expired"), from Cloudflare's verify
        endpoint (developers.cloudflare.com/fundamentals/api/troubleshooting/: "confirming that
        the response returns "status": "active""). It says nothing of permissions: the reads
        that need them do. A user token is verified at /user/tokens/verify, an account-owned
        one at /accounts/{id}/tokens/verify (api/resources/accounts/subresources/tokens/)."""

        async def call() -> str:
            try:
                envelope = await self.client.get("/user/tokens/verify", cast_to=object)
            except cloudflare.AuthenticationError:
                envelope = await self.client.get(
                    f"/accounts/{self.account_id}/tokens/verify", cast_to=object
                )
            result = _result(envelope)
            return str(result.get("status", "unknown")) if isinstance(result, dict) else "unknown"

        return await self._call("verifying the API token", "the token", "no permission", call)

    async def live_view(self, hostname: str) -> LiveView:
        """The load balancer, its pools and the monitor of its first pool, read in turn."""
        lb = await self.load_balancer(hostname)
        pools = {p.id: p for p in await self.pools()}
        monitor_ids = [m for p in lb.default_pools if p in pools and (m := pools[p].monitor_id)]
        monitor = await self.monitor(monitor_ids[0]) if monitor_ids else None
        return LiveView(lb, pools, monitor)

    async def health_events(
        self, since: datetime | None = None, pool_id: str | None = None
    ) -> list[HealthEvent]:
        query: dict[str, str] = {}
        if since is not None:
            query["since"] = since.isoformat().replace("+00:00", "Z")
        if pool_id is not None:
            query["pool_id"] = pool_id

        async def call() -> list[HealthEvent]:
            # No typed method exists for this endpoint in any SDK release.
            envelope = await self.client.get(
                "/user/load_balancing_analytics/events", cast_to=object, options={"params": query}
            )
            return [event_from_json(e) for e in _result(envelope) or ()]

        return await self._call(
            "reading the health events", "the user", "Analytics: Read (load balancing events)", call
        )

    # ------------------------------------------------------------------ writes

    async def set_pool_enabled(self, pool_id: str, enabled: bool) -> PoolInfo:
        """Enabling is a restore: sent past the read breaker and the budget's reserve, once."""
        client = self.restore_client if enabled else self.client

        async def call() -> PoolInfo:
            got = await client.load_balancers.pools.edit(
                pool_id, account_id=self.account_id, enabled=enabled
            )
            return pool_from_json(_dump(got))

        verb = "enabling" if enabled else "disabling"
        return await self._call(
            f"{verb} pool {pool_id}",
            self._account,
            "Load Balancing: Monitors and Pools Edit",
            call,
            Spend.RESTORE if enabled else Spend.CHANGE,
        )

    async def set_origin_enabled(self, pool_id: str, origin: str, enabled: bool) -> PoolInfo:
        """Read the pool, flip one origin, send the whole origins array back (writable keys only).

        Cloudflare has no ETag here: a change made between the read and the write is lost.
        Enabling is a restore, read and write alike (see ``set_pool_enabled``).
        """
        verb = "enabling" if enabled else "disabling"
        what = f"{verb} origin {origin} of pool {pool_id}"
        client = self.restore_client if enabled else self.client

        async def call() -> PoolInfo:
            current = _dump(
                await client.load_balancers.pools.get(pool_id, account_id=self.account_id)
            )
            origins = current.get("origins") or []
            if not any(o.get("name") == origin for o in origins):
                names = ", ".join(str(o.get("name")) for o in origins)
                raise ProviderNotFound(
                    f"pool {current.get('name', pool_id)} has no origin {origin} (it has: {names})"
                )
            sent = [
                {k: o[k] for k in WRITABLE_ORIGIN_KEYS if o.get(k) is not None}
                | ({"enabled": enabled} if o.get("name") == origin else {})
                for o in origins
            ]
            got = await client.load_balancers.pools.edit(
                pool_id,
                account_id=self.account_id,
                origins=sent,  # type: ignore[arg-type]
            )
            return pool_from_json(_dump(got))

        return await self._call(
            what,
            self._account,
            "Load Balancing: Monitors and Pools Edit",
            call,
            Spend.RESTORE if enabled else Spend.CHANGE,
        )


def _times(n: int) -> str:
    return {1: "once", 2: "twice"}.get(n, f"{n} times")


def _first_error(exc: cloudflare.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        errors = body.get("errors") or []
        if errors and isinstance(errors[0], dict):
            return str(errors[0].get("message", errors[0]))
    return str(exc.message)
