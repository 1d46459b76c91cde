"""Builds a running bot from settings: topology, database, probes, router, Slack app."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial

import aiohttp
from aiohttp.typedefs import Handler
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.access import Access
from bot.alerts import Alerts
from bot.cloudflare_api.cached import CachedLoadBalancer
from bot.cloudflare_api.cloudflare import CloudflareLoadBalancer
from bot.db import schema
from bot.db.audit import SqlAuditTrail
from bot.db.engine import create_engine, database_error, ensure_writable, sessionmaker
from bot.db.lease import LeaderLease
from bot.db.replays import SeenRequests
from bot.errors import SchemaOutOfDate
from bot.fleet import Fleet, load_fleet
from bot.health import Prober
from bot.home import Home
from bot.incidents import Incidents
from bot.operations.drain import DrainDriver
from bot.operations.run import Drills
from bot.operations.workflow import Operations
from bot.pagerduty import EventsApi
from bot.pages import PageSender
from bot.paging import Paging, PagingPolicy
from bot.ports import LoadBalancer
from bot.readiness import missing_sqlite_file
from bot.records import IncidentRecords
from bot.scheduler import Leadership
from bot.settings import Settings
from bot.silences import Silences
from bot.slack.app import SlackApp, SlackIdentity, build_bolt_app, group_members
from bot.slack.cloudflare_webhook import PATH as NOTIFICATIONS
from bot.slack.cloudflare_webhook import NotificationReceiver
from bot.slack.notifier import SlackNotifier
from bot.slack.pagerduty_webhook import PATH as PAGERDUTY_WEBHOOK
from bot.slack.pagerduty_webhook import pagerduty_webhook
from bot.status import StatusService
from bot.vantages import Vantages
from bot.watch import Watch, stored_state
from commands.base import Services
from commands.router import Router


@dataclass
class Bot:
    settings: Settings
    fleet: Fleet
    engine: AsyncEngine
    prober: Prober
    loadbalancer: LoadBalancer | None
    http: aiohttp.ClientSession
    router: Router
    slack: SlackApp
    leadership: Leadership | None = None
    identity: SlackIdentity | None = None
    # POST routes of other services on the HTTP app (Cloudflare's notifications, PagerDuty's
    # webhook), by path.
    webhooks: dict[str, Handler] = field(default_factory=dict)

    async def verify_slack(self) -> None:
        """Check the bot token with Slack once, with retries (``serve`` does, before serving):
        a refused token is a ConfigError, Slack out of reach only a warning."""
        if self.identity is not None:
            await self.identity.verify(self.slack.client)

    async def start_watch(self) -> None:
        """Start the scheduler and go for the lease (needs the running event loop)."""
        if self.leadership is not None:
            await self.leadership.start()

    async def aclose(self) -> None:
        if self.leadership is not None:
            await self.leadership.stop()
        await self.prober.aclose()
        if self.loadbalancer is not None:
            await self.loadbalancer.aclose()
        await self.http.close()
        await self.engine.dispose()


async def build_bot(settings: Settings, *, socket_mode: bool = False) -> Bot:
    """Validate everything an operator could have got wrong before serving a single request."""
    # Every missing setting at once, SLACK_APP_TOKEN too over Socket Mode, before anything opens.
    settings.require(*settings.needed_to_serve(socket_mode))
    fleet = load_fleet(settings.failover_config)
    use_cloudflare = settings.cloudflare_configured  # validated before anything is opened
    paging = PagingPolicy.from_settings(settings, fleet)  # a key for an unknown region stops
    if (missing := missing_sqlite_file(settings.database_url)) is not None:
        # Connecting would create it empty, only to refuse it for having no schema.
        raise SchemaOutOfDate(
            f"the database file {missing} does not exist: run `failover-bot migrate` first"
        )
    engine = create_engine(settings.database_url)
    try:
        await schema.ensure_current(engine)
        await ensure_writable(engine)
    except BaseException:
        await engine.dispose()
        raise
    loadbalancer: LoadBalancer | None = None
    # What decides a change to traffic (the safety rules of drains and drills) reads now.
    deciding: LoadBalancer | None = None
    if use_cloudflare:
        # One cached view shared by the watch, status, check, App Home and the drivers. It is
        # never kept longer than the edge's propagation delay: whatever users already get from
        # the edge, the view shows.
        cached = CachedLoadBalancer(
            CloudflareLoadBalancer(
                api_token=settings.cloudflare_api_token or "",
                account_id=settings.cloudflare_account_id or "",
                zone_id=settings.cloudflare_zone_id or "",
                base_url=settings.cloudflare_base_url,
            ),
            ttl=min(fleet.watch.cloudflare_cache, fleet.load_balancer.propagation),
        )
        loadbalancer, deciding = cached, cached.fresh()
    prober = Prober(fleet.monitor)
    http = aiohttp.ClientSession()  # users' view: the public hostname and the relays
    vantages = Vantages(fleet, http, settings.relay_token)
    sessions = sessionmaker(engine)
    # The watch writes its state at every Cloudflare read; older than a few reads, none runs.
    fresh = 3 * fleet.watch.cloudflare_poll + fleet.watch.lease_ttl
    status = StatusService(
        fleet, prober, loadbalancer, vantages, partial(stored_state, sessions, fresh)
    )
    clock = partial(datetime.now, UTC)
    channel = settings.slack_channel or ""
    incidents = Incidents(fleet, channel, Paging(paging, fleet) if paging.enabled else None)
    access = Access(fleet.access, None)
    operations = Operations(fleet, sessions, deciding, clock, channel)
    watch = Watch(fleet, sessions, incidents, loadbalancer, clock) if channel else None
    drills = (
        Drills(fleet, sessions, deciding, vantages, clock, lambda: watch.monitor.state, channel)
        if watch is not None
        else None
    )
    silences = Silences(sessions, clock, channel)  # each silence and its end told the channel
    services = Services(
        fleet=fleet,
        status=status,
        loadbalancer=loadbalancer,
        records=IncidentRecords(fleet, sessions, incidents, clock),
        silences=silences,
        access=access,
        operations=operations,
        clock=clock,
    )
    router = Router(services, SqlAuditTrail(sessions), database_error=database_error)
    home = Home(fleet, sessions, clock)
    identity = SlackIdentity(
        settings.slack_bot_token or ""
    )  # requests authorized without auth.test
    slack = build_bolt_app(
        settings,
        router,
        socket_mode=socket_mode,
        home=home,
        http=http,
        replays=SeenRequests(sessions, clock),
        identity=identity,
    )
    access.members = partial(group_members, slack.client)
    leadership = None
    if watch is not None and drills is not None:
        notifier = SlackNotifier(slack.client)
        alerts = Alerts(sessions, notifier, fleet, lambda: watch.monitor.state, clock)
        holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        lease = LeaderLease(sessions, holder, fleet.watch.lease_ttl)
        # The watch probes on its own client: its concurrency cap must not starve status replies.
        watch_prober = Prober(fleet.monitor, max_concurrency=fleet.watch.probe_concurrency)
        drains = DrainDriver(fleet, sessions, loadbalancer, clock)
        pages = (
            PageSender(sessions, EventsApi(settings.pagerduty_events_url, http), paging, clock)
            if paging.enabled
            else None
        )
        leadership = Leadership(
            fleet, lease, watch, alerts, watch_prober, drains, drills, notifier, home, silences,
            pages,
        )  # fmt: skip
    # Without their secrets both answer 404, saying so.
    notifications = NotificationReceiver(
        settings.cloudflare_webhook_secret,
        settings.cloudflare_account_id,
        sessions,
        # The lease holder, when this instance is it, applies a stored notification at once.
        notified=leadership.notified if leadership is not None else None,
        body_timeout=settings.http_body_timeout,
    )
    webhooks = {
        NOTIFICATIONS: notifications.handle,
        PAGERDUTY_WEBHOOK: pagerduty_webhook(
            settings.pagerduty_webhook_secret,
            sessions,
            incidents,
            clock,
            body_timeout=settings.http_body_timeout,
        ),
    }
    return Bot(
        settings, fleet, engine, prober, loadbalancer, http, router, slack, leadership, identity,
        webhooks,
    )  # fmt: skip


async def migrated_bot(settings: Settings, *, watch: bool = False) -> Bot:
    """Migrate the database, then build the bot (and start its watch): for the sandbox's bots."""
    engine = create_engine(settings.database_url)
    try:
        await schema.upgrade(engine)
    finally:
        await engine.dispose()
    bot = await build_bot(settings)
    if watch:
        await bot.start_watch()
    return bot
