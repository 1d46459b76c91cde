"""Builds a running bot from settings: topology, database, probes, router, Slack app."""

from __future__ import annotations

from dataclasses import dataclass

from slack_bolt.async_app import AsyncApp
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.db import schema
from bot.db.audit import SqlAuditTrail
from bot.db.engine import create_engine, sessionmaker
from bot.fleet import Fleet, load_fleet
from bot.health import Prober
from bot.settings import Settings
from bot.slack.app import build_bolt_app
from bot.status import StatusService
from commands.base import Services
from commands.router import Router


@dataclass
class Bot:
    settings: Settings
    fleet: Fleet
    engine: AsyncEngine
    prober: Prober
    router: Router
    slack: AsyncApp

    async def aclose(self) -> None:
        await self.prober.aclose()
        await self.engine.dispose()


async def build_bot(settings: Settings, *, socket_mode: bool = False) -> Bot:
    """Validate everything an operator could have got wrong before serving a single request."""
    settings.require("slack_bot_token")
    if not socket_mode:
        settings.require("slack_signing_secret")
    fleet = load_fleet(settings.failover_config)
    engine = create_engine(settings.database_url)
    try:
        await schema.ensure_current(engine)
    except BaseException:
        await engine.dispose()
        raise
    prober = Prober(fleet.monitor)
    services = Services(fleet=fleet, status=StatusService(fleet, prober))
    router = Router(services, SqlAuditTrail(sessionmaker(engine)))
    slack = build_bolt_app(settings, router, socket_mode=socket_mode)
    return Bot(settings, fleet, engine, prober, router, slack)
