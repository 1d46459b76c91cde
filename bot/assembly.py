"""Builds a running bot from settings: topology, database, probes, router, Slack app."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from slack_bolt.async_app import AsyncApp
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.db import schema
from bot.db.audit import SqlAuditTrail
from bot.db.engine import create_engine, sessionmaker
from bot.fleet import Fleet, load_fleet
from bot.health import Prober
from bot.loadbalancer.cloudflare import CloudflareLoadBalancer
from bot.loadbalancer.port import LoadBalancer
from bot.settings import Settings
from bot.slack.app import build_bolt_app
from bot.status import StatusService
from bot.userview import UserView
from commands.base import Services
from commands.router import Router


@dataclass
class Bot:
    settings: Settings
    fleet: Fleet
    engine: AsyncEngine
    prober: Prober
    loadbalancer: LoadBalancer | None
    http: httpx.AsyncClient
    router: Router
    slack: AsyncApp

    async def aclose(self) -> None:
        await self.prober.aclose()
        if self.loadbalancer is not None:
            await self.loadbalancer.aclose()
        await self.http.aclose()
        await self.engine.dispose()


async def build_bot(settings: Settings, *, socket_mode: bool = False) -> Bot:
    """Validate everything an operator could have got wrong before serving a single request."""
    settings.require("slack_bot_token")
    if not socket_mode:
        settings.require("slack_signing_secret")
    fleet = load_fleet(settings.failover_config)
    use_cloudflare = settings.cloudflare_configured  # validated before anything is opened
    engine = create_engine(settings.database_url)
    try:
        await schema.ensure_current(engine)
    except BaseException:
        await engine.dispose()
        raise
    loadbalancer: LoadBalancer | None = None
    if use_cloudflare:
        loadbalancer = CloudflareLoadBalancer(
            api_token=settings.cloudflare_api_token or "",
            account_id=settings.cloudflare_account_id or "",
            zone_id=settings.cloudflare_zone_id or "",
            base_url=settings.cloudflare_base_url,
        )
    prober = Prober(fleet.monitor)
    http = httpx.AsyncClient(follow_redirects=True)
    status = StatusService(fleet, prober, loadbalancer, UserView(fleet, http, settings.relay_token))
    services = Services(fleet=fleet, status=status, loadbalancer=loadbalancer)
    router = Router(services, SqlAuditTrail(sessionmaker(engine)))
    slack = build_bolt_app(settings, router, socket_mode=socket_mode)
    return Bot(settings, fleet, engine, prober, loadbalancer, http, router, slack)
