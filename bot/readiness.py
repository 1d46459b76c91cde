"""What ``failover-bot check`` checks: is this environment ready for ``failover-bot serve``?

Offline: the settings ``serve`` needs (every missing or malformed one, each on its line),
SLACK_CHANNEL, Cloudflare's three variables, failover.toml, and the database: reachable and at
the schema this bot needs (a SQLite file that does not exist is reported, never created). With
``online``: Slack's auth.test for SLACK_BOT_TOKEN, and Cloudflare: the token's status, the load
balancer found by the hostname in failover.toml with its pools and monitor, the health events,
and whether Cloudflare's health alerts reach this bot (a policy to PUBLIC_URL covering the pools).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from sqlalchemy.engine import make_url

from bot.cloudflare_api.cloudflare import CloudflareLoadBalancer
from bot.cloudflare_api.notification_setup import (
    NotificationSetup,
    covering_policy,
    destination_url,
    weak_secret,
)
from bot.db import schema
from bot.db.engine import async_url, create_engine, database_error, shown
from bot.errors import ConfigError, ProviderAuthError, ProviderError, SchemaOutOfDate
from bot.fleet import Fleet, load_fleet
from bot.lbmodel import LiveView
from bot.paging import PagingPolicy
from bot.settings import Settings, load_settings

Verdict = Literal["ok", "FAIL", "note"]
DATABASE_TIMEOUT = 10.0  # asyncpg would wait 60 s for a host that drops packets


@dataclass(frozen=True)
class Finding:
    verdict: Verdict  # FAIL: serve would refuse, or would not work; note: works, with less
    text: str


def missing_sqlite_file(url: str) -> Path | None:
    """The file a SQLite ``url`` names, when it does not exist: connecting would create it
    empty, and a refused start would leave it behind."""
    parsed = make_url(async_url(url))
    database = parsed.database
    if not parsed.drivername.startswith("sqlite") or not database or database == ":memory:":
        return None
    if database.startswith("file:"):
        return None  # a URI filename: its own mode= decides whether it is created
    path = Path(database)
    return None if path.exists() else path


def _cloudflare_says(verdict: Verdict, exc: Exception) -> Finding:
    text = str(exc)
    return Finding(verdict, text if text.startswith("Cloudflare") else f"Cloudflare: {text}")


def _lines(verdict: Verdict, exc: Exception) -> list[Finding]:
    return [Finding(verdict, line) for line in str(exc).splitlines()]


def _settings(settings: Settings, socket_mode: bool) -> list[Finding]:
    found: list[Finding] = []
    needed = settings.needed_to_serve(socket_mode)
    try:
        settings.require(*needed)
        mode = "Socket Mode" if socket_mode else "HTTP mode"
        found.append(Finding("ok", f"{' and '.join(n.upper() for n in needed)} set ({mode})"))
    except ConfigError as exc:
        found += _lines("FAIL", exc)
    if settings.slack_channel:
        found.append(
            Finding(
                "ok",
                f"SLACK_CHANNEL {settings.slack_channel}: the watch posts alerts there "
                "(invite the bot to it)",
            )
        )
    else:
        found.append(
            Finding("note", "SLACK_CHANNEL is not set: commands only, no watch and no alerts")
        )
    try:
        if settings.cloudflare_configured:
            found.append(
                Finding(
                    "ok",
                    f"Cloudflare: account {settings.cloudflare_account_id}, "
                    f"zone {settings.cloudflare_zone_id}",
                )
            )
            found.append(_secret(settings))
        else:
            found.append(
                Finding(
                    "note",
                    "Cloudflare is not configured (CLOUDFLARE_API_TOKEN, CLOUDFLARE_ACCOUNT_ID, "
                    "CLOUDFLARE_ZONE_ID): status from the probes alone; no drains or drills",
                )
            )
    except ConfigError as exc:
        found += _lines("FAIL", exc)
    return found


def _secret(settings: Settings) -> Finding:
    """Offline: whether the bot can take Cloudflare's notifications (only said with Cloudflare)."""
    weak = weak_secret(settings.cloudflare_webhook_secret or "")
    if settings.cloudflare_webhook_secret and weak:
        return Finding("note", f"{weak}; `failover-bot notifications setup` refuses it")
    if settings.cloudflare_webhook_secret:
        return Finding(
            "ok",
            "CLOUDFLARE_WEBHOOK_SECRET set: POST /cloudflare/notifications takes Cloudflare's "
            "health alerts",
        )
    return Finding(
        "note",
        "CLOUDFLARE_WEBHOOK_SECRET is not set: no Cloudflare notifications, the watch polls "
        "alone (`failover-bot notifications setup` makes one)",
    )


async def _notifications(
    lb: CloudflareLoadBalancer, settings: Settings, fleet: Fleet, view: LiveView
) -> Finding:
    """Whether an enabled health-alert policy sends every pool's changes to this bot: two reads."""
    setup = "run `failover-bot notifications setup`"
    if not settings.public_url:
        return Finding(
            "note",
            f"Cloudflare notifications: PUBLIC_URL is not set, so none can reach the bot "
            f"(set it, then {setup})",
        )
    url = destination_url(settings.public_url)
    ids = {p.name: p.id for p in view.pools.values()}
    pool_ids = {r.pool: ids.get(r.pool, "") for r in fleet.regions.values()}
    reader = NotificationSetup(lb)
    try:
        policy, gaps = covering_policy(
            await reader.webhooks(), await reader.policies(), url, pool_ids
        )
    except ProviderError as exc:
        return _cloudflare_says("note", exc)
    if policy is None:
        return Finding(
            "note",
            f"Cloudflare notifications: no enabled Load Balancing health alert is sent to "
            f"{url}: {setup}",
        )
    if gaps:
        return Finding(
            "note",
            f"Cloudflare notifications: policy {policy.get('name')!r} leaves out "
            f"{', '.join(gaps)}: {setup}",
        )
    return Finding(
        "ok",
        f"Cloudflare notifications: policy {policy.get('name')!r} sends the health of "
        f"{', '.join(pool_ids)} to {url}",
    )


def _paging(settings: Settings, fleet: Fleet) -> Finding:
    """Whether incidents page PagerDuty, and whether its acknowledgements come back."""
    try:
        policy = PagingPolicy.from_settings(settings, fleet)
    except ConfigError as exc:
        return Finding("FAIL", str(exc))
    if not policy.enabled:
        return Finding("note", policy.describe())
    back = (
        "acknowledgements in PagerDuty come back through POST /pagerduty/webhooks"
        if settings.pagerduty_webhook_secret
        else "PAGERDUTY_WEBHOOK_SECRET is not set: acknowledgements in PagerDuty are not shown"
    )
    return Finding("ok", f"{policy.describe()}; {back}")


async def _database(url: str) -> Finding:
    where = f"database {shown(url)}"
    try:
        missing = missing_sqlite_file(url)
    except ConfigError as exc:
        return Finding("FAIL", str(exc))
    if missing is not None:
        return Finding(
            "FAIL", f"{where}: {missing} does not exist: run `failover-bot migrate` (it creates it)"
        )
    engine = create_engine(url)
    try:
        async with asyncio.timeout(DATABASE_TIMEOUT):
            await schema.ensure_current(engine)
            current = await schema.current_revision(engine)
    except SchemaOutOfDate as exc:
        return Finding("FAIL", f"{where}: {exc}")
    except TimeoutError:
        return Finding("FAIL", f"{where}: no answer within {DATABASE_TIMEOUT:g} s")
    except Exception as exc:
        reason = database_error(exc)
        if reason is None:
            raise  # a bug, not the environment: its traceback is what its fixer needs
        return Finding("FAIL", f"{where} cannot be used: {reason}")
    finally:
        await engine.dispose()
    return Finding("ok", f"{where}: schema at {current}, as this bot needs")


async def _slack(settings: Settings) -> Finding:
    from bot.slack.whoami import who_am_i  # Slack's client libraries, only when asked online

    try:
        return Finding("ok", f"Slack: SLACK_BOT_TOKEN is {await who_am_i(settings)}")
    except (ConfigError, ProviderError) as exc:
        return Finding("FAIL", f"Slack: {exc}")


async def _cloudflare(settings: Settings, fleet: Fleet) -> list[Finding]:
    hostname = fleet.load_balancer.hostname
    lb = CloudflareLoadBalancer(
        settings.cloudflare_api_token or "",
        settings.cloudflare_account_id or "",
        settings.cloudflare_zone_id or "",
        base_url=settings.cloudflare_base_url,
    )
    found: list[Finding] = []
    try:
        try:
            status = await lb.verify_token()
        except ProviderError as exc:
            return [_cloudflare_says("FAIL", exc)]
        if status != "active":
            return [
                Finding(
                    "FAIL",
                    f"Cloudflare: CLOUDFLARE_API_TOKEN is {status}: re-enable it or create a new "
                    "one (My Profile → API Tokens)",
                )
            ]
        found.append(Finding("ok", "Cloudflare: CLOUDFLARE_API_TOKEN is active"))
        try:
            view = await lb.live_view(hostname)
        except ProviderError as exc:
            return [*found, _cloudflare_says("FAIL", exc)]
        monitor = (
            f"monitor {view.monitor.method} {view.monitor.path}" if view.monitor else "no monitor"
        )
        found.append(
            Finding(
                "ok",
                f"Cloudflare: load balancer {hostname} found, {len(view.pools)} pools and the "
                f"{monitor} readable (`/failover check` holds them against failover.toml)",
            )
        )
        try:
            await lb.health_events(since=datetime.now(UTC) - timedelta(hours=1))
            found.append(Finding("ok", "Cloudflare: health events readable"))
        except ProviderAuthError as exc:
            found.append(Finding("note", f"Cloudflare: {exc}; the bot carries on without them"))
        except ProviderError as exc:
            found.append(_cloudflare_says("FAIL", exc))
        found.append(await _notifications(lb, settings, fleet, view))
        found.append(
            Finding(
                "note",
                "Cloudflare: Edit permissions (drains and drills) are not checked: Cloudflare "
                "says whether a token may change a pool only when it tries",
            )
        )
        return found
    finally:
        await lb.aclose()


async def readiness(*, socket_mode: bool = False, online: bool = False) -> list[Finding]:
    """Every finding, in the order an operator would fix them."""
    found: list[Finding] = []
    settings: Settings | None
    try:
        settings = load_settings()
    except ConfigError as exc:
        settings, found = None, _lines("FAIL", exc)
    defaults = Settings.model_fields
    config = (
        settings.failover_config
        if settings
        else os.environ.get("FAILOVER_CONFIG", str(defaults["failover_config"].default))
    )
    url = (
        settings.database_url
        if settings
        else os.environ.get("DATABASE_URL", str(defaults["database_url"].default))
    )
    if settings is not None:
        found += _settings(settings, socket_mode)
    fleet: Fleet | None = None
    try:
        fleet = load_fleet(config)
        origins = sum(len(r.origins) for r in fleet.regions.values())
        found.append(Finding("ok", f"{config}: {len(fleet.regions)} regions, {origins} origins"))
    except ConfigError as exc:
        found += _lines("FAIL", exc)
    if settings is not None and fleet is not None:
        found.append(_paging(settings, fleet))
    found.append(await _database(url))
    if online and settings is not None:
        if settings.slack_bot_token:
            found.append(await _slack(settings))
        try:
            configured = settings.cloudflare_configured
        except ConfigError:
            configured = False  # already reported
        if configured and fleet is not None:
            found += await _cloudflare(settings, fleet)
    return found


def report(found: Sequence[Finding], online: bool) -> str:
    """The findings, one a line, then what they add up to."""
    lines = [f"{f.verdict:<4}  {f.text}" for f in found]
    failed = sum(f.verdict == "FAIL" for f in found)
    if failed:
        lines.append(
            f"{failed} problem{'s' if failed != 1 else ''}: fix {'them' if failed != 1 else 'it'}, "
            "then run `failover-bot check` again"
        )
    else:
        later = "" if online else " (add --online to ask Slack and Cloudflare too)"
        lines.append(f"ready: `failover-bot serve` has what it needs{later}")
    return "\n".join(lines)
