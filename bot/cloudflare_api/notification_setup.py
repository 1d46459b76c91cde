"""``failover-bot notifications setup``: Cloudflare's Load Balancing health alert to this bot.

Through the official SDK (``client.alerting.destinations.webhooks`` and ``client.alerting.
policies``), on the client ``CloudflareLoadBalancer`` builds (the token only, the API budget):
- a generic webhook destination at PUBLIC_URL + ``/cloudflare/notifications`` with
  CLOUDFLARE_WEBHOOK_SECRET, which Cloudflare sends in ``cf-webhook-auth``
  (developers.cloudflare.com/notifications/get-started/configure-webhooks/). Cloudflare tests the
  URL when the destination is created or changed, so the serving bot must know the secret first;
  and it never returns a secret, so the destination's name carries a short fingerprint of it
  (sha256, 8 hex digits) for a later run to see whether the secret changed;
- a ``load_balancing_health_alert`` policy on the pools of failover.toml, both health changes, pool
  and origin events (load-balancing/reference/migration-guides/health-monitor-notifications/).

Idempotent: the destination is found by its name (or URL), the policy by its name; each is
created, updated or left alone, and a second run changes nothing.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from bot.cloudflare_api.budget import Spend
from bot.cloudflare_api.cloudflare import CloudflareLoadBalancer
from bot.errors import ProviderError
from bot.fleet import Fleet
from bot.settings import Settings

WEBHOOK_PATH = "/cloudflare/notifications"
ALERT_TYPE = "load_balancing_health_alert"
NEW_HEALTH = ["Healthy", "Unhealthy"]
EVENT_SOURCE = ["origin", "pool"]
READ = "Notifications Read"
EDIT = "Notifications Edit"


def destination_url(base: str) -> str:
    return base.rstrip("/") + WEBHOOK_PATH


def fingerprint(secret: str) -> str:
    """Eight hex digits of the secret's SHA-256: enough to tell secrets apart, nothing to guess."""
    return hashlib.sha256(secret.encode()).hexdigest()[:8]


def destination_prefix(fleet: Fleet) -> str:
    return f"failover-bot {fleet.load_balancer.hostname}"


def destination_name(fleet: Fleet, secret: str) -> str:
    return f"{destination_prefix(fleet)} (secret {fingerprint(secret)})"


def policy_name(fleet: Fleet) -> str:
    return f"failover-bot {fleet.load_balancer.hostname} pool health"


def policy_filters(pool_ids: list[str]) -> dict[str, list[str]]:
    return {"pool_id": sorted(pool_ids), "new_health": NEW_HEALTH, "event_source": EVENT_SOURCE}


def _normal(filters: Any) -> dict[str, list[str]]:
    """Filters compared as sets of lower-case words: Cloudflare's own order and case do not
    matter (its examples write "Unhealthy", integrations "unhealthy")."""
    if not isinstance(filters, dict):
        return {}
    return {
        str(k): sorted(str(v).lower() for v in values or [])
        for k, values in filters.items()
        if values
    }


def _allows(filters: dict[str, list[str]], key: str, value: str) -> bool:
    """A filter left out lets every value through (notifications/ "Optional filters")."""
    values = filters.get(key)
    return not values or value.lower() in values


def _webhook_ids(mechanisms: Any) -> list[str]:
    if not isinstance(mechanisms, dict):
        return []
    return sorted(str(m.get("id")) for m in mechanisms.get("webhooks") or [] if isinstance(m, dict))


@dataclass
class Outcome:
    """What setup did (or, with --dry-run, would do), a line each; ``changed`` counts writes."""

    lines: list[str] = field(default_factory=list)
    changed: int = 0


class NotificationSetup:
    """Reads and writes Cloudflare's notification destinations and policies for this bot."""

    def __init__(self, lb: CloudflareLoadBalancer) -> None:
        self.lb = lb
        self.alerting = lb.client.alerting
        self.account = f"account {lb.account_id}"

    async def _read(self, what: str, call: Callable[[], Any]) -> Any:
        return await self.lb._call(what, self.account, READ, call)

    async def _write(self, what: str, call: Callable[[], Any]) -> Any:
        return await self.lb._call(what, self.account, EDIT, call, Spend.CHANGE)

    async def webhooks(self) -> list[dict[str, Any]]:
        async def call() -> list[dict[str, Any]]:
            page = await self.alerting.destinations.webhooks.list(account_id=self.lb.account_id)
            return [w.to_dict() for w in page.result]

        result: list[dict[str, Any]] = await self._read("reading the webhook destinations", call)
        return result

    async def policies(self) -> list[dict[str, Any]]:
        async def call() -> list[dict[str, Any]]:
            page = await self.alerting.policies.list(account_id=self.lb.account_id)
            return [p.to_dict() for p in page.result]

        result: list[dict[str, Any]] = await self._read("reading the notification policies", call)
        return result

    async def pool_ids(self, fleet: Fleet) -> dict[str, str]:
        """The Cloudflare id of each pool failover.toml names (name -> id); a missing one fails."""
        pools = {p.name: p.id for p in await self.lb.pools()}
        wanted = [r.pool for r in fleet.regions.values()]
        missing = [name for name in wanted if name not in pools]
        if missing:
            raise ProviderError(
                f"Cloudflare has no pool named {', '.join(missing)} (failover.toml's pools): "
                "run `failover-bot check --online`"
            )
        return {name: pools[name] for name in wanted}

    @staticmethod
    def find_destination(
        webhooks: list[dict[str, Any]], fleet: Fleet, url: str
    ) -> dict[str, Any] | None:
        prefix = destination_prefix(fleet)
        named = [w for w in webhooks if str(w.get("name", "")).startswith(prefix)]
        by_url = [w for w in webhooks if w.get("url") == url]
        return next(iter(named or by_url), None)

    async def apply(self, fleet: Fleet, url: str, secret: str, dry_run: bool) -> Outcome:
        out = Outcome()
        would = "would " if dry_run else ""
        pools = await self.pool_ids(fleet)
        name = destination_name(fleet, secret)
        found = self.find_destination(await self.webhooks(), fleet, url)
        hooks = self.alerting.destinations.webhooks
        account = self.lb.account_id
        if found is None:
            out.changed += 1
            out.lines.append(f"{would}create the webhook destination {name!r} -> {url}")
            webhook_id = "(the new destination)"
            if not dry_run:
                created = await self._write(
                    "creating the webhook destination",
                    lambda: hooks.create(account_id=account, name=name, url=url, secret=secret),
                )
                webhook_id = str(getattr(created, "id", "") or "")
                if not webhook_id:
                    raise ProviderError("Cloudflare created the destination but gave no id")
        else:
            webhook_id = str(found["id"])
            if found.get("name") != name or found.get("url") != url:
                out.changed += 1
                why = "its URL" if found.get("url") != url else "its secret"
                out.lines.append(
                    f"{would}update the webhook destination {found.get('name')!r} ({why} "
                    f"changed) -> {url}"
                )
                if not dry_run:
                    await self._write(
                        "updating the webhook destination",
                        lambda: hooks.update(
                            webhook_id, account_id=account, name=name, url=url, secret=secret
                        ),
                    )
            else:
                out.lines.append(f"webhook destination {name!r} -> {url}: unchanged")
        await self._policy(fleet, webhook_id, list(pools.values()), dry_run, out)
        return out

    async def _policy(
        self, fleet: Fleet, webhook_id: str, pool_ids: list[str], dry_run: bool, out: Outcome
    ) -> None:
        would = "would " if dry_run else ""
        name = policy_name(fleet)
        pools = ", ".join(r.pool for r in fleet.regions.values())
        wanted: dict[str, Any] = {
            "alert_type": ALERT_TYPE,
            "enabled": True,
            "mechanisms": {"webhooks": [{"id": webhook_id}]},
            "filters": policy_filters(pool_ids),
            "description": "Pool and origin health of the failover bot's load balancer",
        }
        policies = self.alerting.policies
        account = self.lb.account_id
        found = next((p for p in await self.policies() if p.get("name") == name), None)
        if found is None:
            out.changed += 1
            out.lines.append(f"{would}create the notification policy {name!r} for pools {pools}")
            if not dry_run:
                await self._write(
                    "creating the notification policy",
                    lambda: policies.create(account_id=account, name=name, **wanted),
                )
            return
        differs = [
            key
            for key, same in (
                ("alert_type", found.get("alert_type") == ALERT_TYPE),
                ("enabled", found.get("enabled") is True),
                ("destination", _webhook_ids(found.get("mechanisms")) == [webhook_id]),
                ("filters", _normal(found.get("filters")) == _normal(wanted["filters"])),
            )
            if not same
        ]
        if not differs:
            out.lines.append(f"notification policy {name!r} for pools {pools}: unchanged")
            return
        out.changed += 1
        out.lines.append(
            f"{would}update the notification policy {name!r} ({', '.join(differs)} differ)"
        )
        if not dry_run:
            policy_id = str(found["id"])
            await self._write(
                "updating the notification policy",
                lambda: policies.update(policy_id, account_id=account, name=name, **wanted),
            )


def covering_policy(
    webhooks: list[dict[str, Any]],
    policies: list[dict[str, Any]],
    url: str,
    pool_ids: dict[str, str],
) -> tuple[dict[str, Any] | None, list[str]]:
    """The enabled health-alert policy that sends to ``url`` and what it leaves out (pool names,
    health words, event sources); (None, []) when no policy sends there."""
    targets = {str(w.get("id")) for w in webhooks if w.get("url") == url}
    best: tuple[dict[str, Any] | None, list[str]] = (None, [])
    for policy in policies:
        if policy.get("alert_type") != ALERT_TYPE or policy.get("enabled") is not True:
            continue
        if not targets & set(_webhook_ids(policy.get("mechanisms"))):
            continue
        filters = _normal(policy.get("filters"))
        gaps = [f"pool {n}" for n, i in pool_ids.items() if not _allows(filters, "pool_id", i)]
        gaps += [f"{w} events" for w in EVENT_SOURCE if not _allows(filters, "event_source", w)]
        gaps += [f"{w} changes" for w in NEW_HEALTH if not _allows(filters, "new_health", w)]
        if best[0] is None or len(gaps) < len(best[1]):
            best = (policy, gaps)
    return best


# The destination's name shows a fingerprint of the secret to anyone with Notifications Read: a
# short or hand-picked secret could be found from it offline, a long random one cannot.
MIN_SECRET = 32


def new_secret() -> str:
    return secrets.token_urlsafe(32)  # 43 characters


def weak_secret(secret: str) -> str | None:
    """Why ``secret`` will not do for the destination, if it will not."""
    if len(secret) >= MIN_SECRET:
        return None
    return (
        f"CLOUDFLARE_WEBHOOK_SECRET is {len(secret)} characters: at least {MIN_SECRET} are needed "
        f"(its fingerprint is readable in Cloudflare); use a new one such as {new_secret()}"
    )


CHECK = "`failover-bot check --online` reports whether the policy exists and covers every pool"


async def run_setup(
    settings: Settings, fleet: Fleet, url: str | None, dry_run: bool, say: Callable[[str], None]
) -> int:
    """The command's body: 0 when Cloudflare is (or would be) set up, 2 with one line otherwise."""
    base = url or settings.public_url
    if not base:
        say("PUBLIC_URL is not set: set it to the bot's public https base URL, or pass --url")
        return 2
    parts = urlsplit(base)
    # Cloudflare posts from the internet: https, except to a loopback address (the sandbox).
    if parts.scheme != "https" and not (
        parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1")
    ):
        say(f"{base!r} is not the bot's public https base URL (e.g. https://failover.example.com)")
        return 2
    if not settings.cloudflare_configured:
        say(
            "Cloudflare is not configured: set CLOUDFLARE_API_TOKEN, CLOUDFLARE_ACCOUNT_ID and "
            "CLOUDFLARE_ZONE_ID"
        )
        return 2
    secret = settings.cloudflare_webhook_secret
    if not secret:
        # Cloudflare tests the URL on creation: the bot must know the secret before it exists.
        say("CLOUDFLARE_WEBHOOK_SECRET is not set. Here is a new one:")
        say(f"  CLOUDFLARE_WEBHOOK_SECRET={new_secret()}")
        say(
            "Set it where the bot runs (and restart it) and here, then run "
            "`failover-bot notifications setup` again. Nothing was created."
        )
        return 2
    weak = weak_secret(secret)
    if weak:
        say(weak + ". Nothing was created.")
        return 2
    target = destination_url(base)
    lb = CloudflareLoadBalancer(
        settings.cloudflare_api_token or "",
        settings.cloudflare_account_id or "",
        settings.cloudflare_zone_id or "",
        base_url=settings.cloudflare_base_url,
    )
    try:
        outcome = await NotificationSetup(lb).apply(fleet, target, secret, dry_run)
    except ProviderError as exc:
        text = str(exc)
        say(text if text.startswith("Cloudflare") else f"Cloudflare: {text}")
        return 2
    finally:
        await lb.aclose()
    for line in outcome.lines:
        say(line)
    if dry_run:
        say(f"dry run: {outcome.changed} change(s) would be made, none was")
    elif outcome.changed:
        say(f"done: {outcome.changed} change(s); Cloudflare now notifies {target}")
    else:
        say(f"nothing to change: Cloudflare already notifies {target}")
    say(CHECK)
    return 0
