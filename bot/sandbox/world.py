"""The whole sandbox: a gateway per region, their control, the Slack stand-in, a failover.toml.

The topology file it writes is the operator's own (``base_config``) with each region's origin
pointed at its sandbox gateway, so the bot runs exactly as configured, against loopback.
"""

from __future__ import annotations

import secrets
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from bot.fleet import Fleet, load_fleet, parse_fleet
from bot.sandbox.gateways import Gateway, GatewayControl
from bot.sandbox.slack import SlackStandIn

BOT_TOKEN = "xoxb-sandbox-0000-failover"


class Sandbox:
    def __init__(self, base_config: str | Path, workdir: str | Path) -> None:
        self.base_config = Path(base_config)
        self.workdir = Path(workdir)
        self.base: Fleet = load_fleet(self.base_config)
        self.bot_token = BOT_TOKEN
        self.signing_secret = secrets.token_hex(16)
        self.gateways = {name: Gateway(name) for name in self.base.regions}
        self.control = GatewayControl(self.gateways)
        self.slack = SlackStandIn(self.bot_token)
        self.config_path = self.workdir / "failover.sandbox.toml"

    async def start(self) -> None:
        for gateway in self.gateways.values():
            await gateway.start()
        await self.control.server.start()
        await self.slack.start()
        self._write_config()

    async def close(self) -> None:
        await self.slack.close()
        await self.control.server.close()
        for gateway in self.gateways.values():
            await gateway.close()

    def _write_config(self) -> None:
        data: dict[str, Any] = tomllib.loads(self.base_config.read_text(encoding="utf-8"))
        for name, region in data["regions"].items():
            first = region["origins"][0]
            region["origins"] = [{**first, "url": self.gateways[name].url}]
            region["minimum_origins"] = 1
        parse_fleet(data, str(self.config_path))  # what we write must load
        self.workdir.mkdir(parents=True, exist_ok=True)
        header = (
            "# Written by `failover-bot sandbox`: the operator's topology on loopback gateways.\n"
        )
        self.config_path.write_text(header + tomli_w.dumps(data), encoding="utf-8")

    def endpoints(self) -> dict[str, Any]:
        return {
            "gateways": {
                name: {"url": gw.url, "control": f"{self.control.url}/gateways/{name}"}
                for name, gw in self.gateways.items()
            },
            "gateway_control": f"{self.control.url}/gateways",
            "slack": {
                "api_url": self.slack.api_url,
                "url": self.slack.url,
                "bot_token": self.bot_token,
                "signing_secret": self.signing_secret,
                "inspect": f"{self.slack.url}/_sandbox/calls",
            },
            "config": str(self.config_path),
        }
