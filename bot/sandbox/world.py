"""The whole sandbox on loopback: gateways, Cloudflare (API, monitor, data plane), relays, Slack.

The topology file it writes is the operator's own (``base_config``) with each region's origin
pointed at its sandbox gateway, the public hostname at the data plane, relays added, and the
monitor's interval shortened so that failovers happen in seconds.
"""

from __future__ import annotations

import secrets
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from bot.errors import ConfigError
from bot.fleet import Fleet, load_fleet, parse_fleet
from bot.relay import build_relay_app
from bot.sandbox.cloudflare import CloudflareStandIn
from bot.sandbox.dataplane import GEO_HEADER, DataPlane
from bot.sandbox.gateways import REGION_HEADER, Gateway, GatewayControl
from bot.sandbox.pagerduty import PagerDutyStandIn
from bot.sandbox.servers import LocalServer
from bot.sandbox.slack import SlackStandIn
from bot.settings import Settings

BOT_TOKEN = "xoxb-sandbox-0000-failover"
CHANNEL = "C0FAILOVER"  # the alert channel
BOT_GEO = "ENAM"  # where the sandbox pretends the bot runs
RELAY_GEOS = ("WNAM", "WEU", "SEAS")  # one per pool's home, as the seed's Terraform maps them


class Sandbox:
    def __init__(
        self,
        base_config: str | Path,
        workdir: str | Path,
        *,
        monitor_interval: float = 2.0,
        propagation: float = 1.0,
        relays: tuple[str, ...] = RELAY_GEOS,
        watch: dict[str, str] | None = None,
        operations: dict[str, str] | None = None,
        gamedays: dict[str, object] | None = None,
        monitor_header: dict[str, list[str]] | None = None,
        notifications: bool = False,
        paging: bool = False,
    ) -> None:
        self.base_config = Path(base_config)
        self.workdir = Path(workdir)
        self.base: Fleet = load_fleet(self.base_config)
        self.propagation = propagation
        self.monitor_interval = monitor_interval
        # The watch at sandbox speed: a failover happens in seconds, so look every second or two.
        self.watch = {
            "probe_interval": "2s",
            "cloudflare_poll": "2s",
            "settle": "10s",
            "flap_window": "1m",
            "lease_ttl": "6s",
        } | (watch or {})
        self.gamedays = gamedays or {}
        self.operations = {"settle": "5s", "rejoin_timeout": "30s", "drill_hold": "3s"} | (
            operations or {}
        )
        self.bot_token = BOT_TOKEN
        self.signing_secret = secrets.token_hex(16)
        # With notifications, the bot gets CLOUDFLARE_WEBHOOK_SECRET and, once it listens,
        # `notify_bot` runs the real setup against the stand-in, which then dispatches to it.
        self.webhook_secret = secrets.token_urlsafe(32) if notifications else None
        # With paging, the bot pages the PagerDuty stand-in (its routing key and events URL)
        # and, once subscribed (`page_bot`), hears back acknowledgements signed with this secret.
        self.pagerduty = PagerDutyStandIn()
        self.paging = paging
        self.pagerduty_secret = secrets.token_urlsafe(32) if paging else None
        self.gateways = {name: Gateway(name) for name in self.base.regions}
        self.control = GatewayControl(self.gateways)
        self.slack = SlackStandIn(self.bot_token)
        origin_urls = {
            r.origins[0].name: self.gateways[r.name].url for r in self.base.regions.values()
        }
        self.cloudflare = CloudflareStandIn(
            self._sandbox_fleet(origin_urls),
            origin_urls,
            propagation=propagation,
            monitor_header=monitor_header,
        )
        self.dataplane = DataPlane(self.cloudflare, default_geo=BOT_GEO)
        self.relay_geos = relays
        self.relays: dict[str, LocalServer] = {}
        self.config_path = self.workdir / "failover.sandbox.toml"

    def _sandbox_data(
        self, origin_urls: dict[str, str], public_url: str = "http://127.0.0.1:9"
    ) -> dict[str, Any]:
        data: dict[str, Any] = tomllib.loads(self.base_config.read_text(encoding="utf-8"))
        for region in data["regions"].values():
            first = region["origins"][0]
            region["origins"] = [{**first, "url": origin_urls[first["name"]]}]
            region["minimum_origins"] = 1
        data.setdefault("monitor", {})["interval"] = f"{self.monitor_interval:g}s"
        # The bot's detection budgets count the stand-in's real propagation delay.
        data["load_balancer"]["propagation"] = f"{self.propagation:g}s"
        data["watch"] = data.get("watch", {}) | self.watch
        # The console's operator may act, and so may the on-call group; one approver.
        data["access"] = {"operators": ["U0OPERATOR", "S0ONCALL"], "approvers": ["U0APPROVER"]}
        data["operations"] = data.get("operations", {}) | self.operations
        # The sandbox runs any day at any hour: no blocked windows unless a test sets them.
        data["gamedays"] = {"notice": "1h", "weekly": [], "blocked": []} | self.gamedays
        data["public"] = {
            "url": f"{public_url}/health",
            # The gateway's body names the edge data center (cf.colo), the same whichever pool
            # answered; the header names the deployment that did.
            "served_by": {"header": REGION_HEADER},
            "location": f"the bot's location ({BOT_GEO})",
            "geo_header": GEO_HEADER,
        }
        data["relays"] = []
        return data

    def _sandbox_fleet(self, origin_urls: dict[str, str]) -> Fleet:
        return parse_fleet(self._sandbox_data(origin_urls), "sandbox")

    async def start(self) -> None:
        for gateway in self.gateways.values():
            await gateway.start()
        await self.control.server.start()
        await self.slack.start()
        await self.pagerduty.start()
        await self.cloudflare.start()
        await self.dataplane.start()
        origin_urls = {
            r.origins[0].name: self.gateways[r.name].url for r in self.base.regions.values()
        }
        data = self._sandbox_data(origin_urls, self.dataplane.url)
        public = parse_fleet(data, "sandbox").public
        assert public is not None
        for geo in self.relay_geos:
            self.relays[geo] = LocalServer(build_relay_app(public, geo))
            await self.relays[geo].start()
        data["relays"] = [{"geo": geo, "url": server.url} for geo, server in self.relays.items()]
        parse_fleet(data, str(self.config_path))  # what we write must load
        self.workdir.mkdir(parents=True, exist_ok=True)
        header = (
            "# Written by the sandbox: the operator's topology on loopback, with sandbox timings.\n"
        )
        self.config_path.write_text(header + tomli_w.dumps(data), encoding="utf-8")

    async def close(self) -> None:
        for relay in self.relays.values():
            await relay.close()
        await self.dataplane.close()
        await self.cloudflare.close()
        await self.slack.close()
        await self.pagerduty.close()
        await self.control.server.close()
        for gateway in self.gateways.values():
            await gateway.close()

    def bot_settings(self, database_url: str) -> Settings:
        """Settings for a bot that lives in this world."""
        return Settings(
            slack_bot_token=self.bot_token,
            slack_signing_secret=self.signing_secret,
            slack_api_url=self.slack.api_url,
            cloudflare_api_token=self.cloudflare.token,
            cloudflare_account_id=self.cloudflare.account_id,
            cloudflare_zone_id=self.cloudflare.zone_id,
            cloudflare_base_url=self.cloudflare.base_url,
            slack_channel=CHANNEL,
            database_url=database_url,
            failover_config=str(self.config_path),
            cloudflare_webhook_secret=self.webhook_secret,
            pagerduty_routing_key=self.pagerduty.routing_key if self.paging else None,
            pagerduty_events_url=self.pagerduty.events_url,
            pagerduty_webhook_secret=self.pagerduty_secret,
        )

    def page_bot(self, bot_url: str) -> None:
        """PagerDuty's V3 webhook subscription to the bot listening at ``bot_url``."""
        if self.pagerduty_secret is not None:
            self.pagerduty.subscribe(f"{bot_url}/pagerduty/webhooks", self.pagerduty_secret)

    async def notify_bot(self, bot_url: str, database_url: str) -> list[str]:
        """``failover-bot notifications setup`` for the bot listening at ``bot_url``: the
        stand-in then sends its health alerts there. Its lines; ConfigError when it failed."""
        from bot.cloudflare_api.notification_setup import run_setup

        settings = self.bot_settings(database_url).model_copy(update={"public_url": bot_url})
        lines: list[str] = []
        if await run_setup(settings, load_fleet(self.config_path), None, False, lines.append):
            raise ConfigError("notifications setup failed: " + " / ".join(lines))
        return lines

    def bot_environment(self, database_url: str) -> dict[str, str]:
        """The environment of a `failover-bot serve` process in this world (bot_settings as env)."""
        s = self.bot_settings(database_url)
        named = {
            "SLACK_BOT_TOKEN": s.slack_bot_token,
            "SLACK_SIGNING_SECRET": s.slack_signing_secret,
            "SLACK_API_URL": s.slack_api_url,
            "SLACK_CHANNEL": s.slack_channel,
            "CLOUDFLARE_API_TOKEN": s.cloudflare_api_token,
            "CLOUDFLARE_ACCOUNT_ID": s.cloudflare_account_id,
            "CLOUDFLARE_ZONE_ID": s.cloudflare_zone_id,
            "CLOUDFLARE_BASE_URL": s.cloudflare_base_url,
            "DATABASE_URL": s.database_url,
            "FAILOVER_CONFIG": s.failover_config,
            "CLOUDFLARE_WEBHOOK_SECRET": s.cloudflare_webhook_secret,
            "PAGERDUTY_ROUTING_KEY": s.pagerduty_routing_key,
            "PAGERDUTY_EVENTS_URL": s.pagerduty_events_url if s.pagerduty_routing_key else None,
            "PAGERDUTY_WEBHOOK_SECRET": s.pagerduty_webhook_secret,
        }
        return {k: v for k, v in named.items() if v is not None}

    def endpoints(self) -> dict[str, Any]:
        cf = self.cloudflare
        return {
            "gateways": {
                name: {"url": gw.url, "control": f"{self.control.url}/gateways/{name}"}
                for name, gw in self.gateways.items()
            },
            "gateway_control": f"{self.control.url}/gateways",
            "cloudflare": {
                "base_url": cf.base_url,
                "api_token": cf.token,
                "account_id": cf.account_id,
                "zone_id": cf.zone_id,
                "faults": f"{cf.server.url}/_sandbox/faults",
                "monitor_interval": self.monitor_interval,
                "propagation": cf.propagation,
            },
            "public": {
                "url": f"{self.dataplane.url}/health",
                "geo_header": GEO_HEADER,
                "default_geo": BOT_GEO,
            },
            "relays": {geo: server.url for geo, server in self.relays.items()},
            "slack": {
                "api_url": self.slack.api_url,
                "url": self.slack.url,
                "bot_token": self.bot_token,
                "signing_secret": self.signing_secret,
                "inspect": f"{self.slack.url}/_sandbox/calls",
            },
            "pagerduty": {
                "events_url": self.pagerduty.events_url,
                "routing_key": self.pagerduty.routing_key if self.paging else None,
                "alerts": f"{self.pagerduty.url}/_sandbox/alerts",
                "faults": f"{self.pagerduty.url}/_sandbox/faults",
            },
            "config": str(self.config_path),
        }
