"""The demo: the sandbox and the bot together, and a console that plays the operator.

Lines it understands: ``/failover ...``, ``break <region> <mode> [check|seconds]``,
``heal <region>|all``, ``gateways``, ``channel``, ``click <n>``, ``wait <seconds>``, ``help``,
``quit``. With a script, each line is echoed and run in turn, no terminal needed.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TextIO

from bot.assembly import Bot, migrated_bot
from bot.sandbox.gateways import CHECKS, MODES
from bot.sandbox.render import render_message
from bot.sandbox.servers import LocalServer
from bot.sandbox.slack_client import CHANNEL, SlackUser
from bot.sandbox.world import Sandbox
from bot.slack.server import build_web_app

CONSOLE_HELP = """\
  /failover <subcommand>        what an operator types in Slack (try /failover help)
  break <region> <mode> [arg]   modes: {modes}
                                degraded/flapping take a check ({checks}); slow/flapping seconds
  heal <region>|all             make gateways healthy again
  gateways                      what each sandbox gateway is doing
  channel                       the messages posted in #failover
  click <n>                     press button n of the last reply
  wait <seconds>                let time pass
  quit""".format(modes=", ".join(MODES), checks=", ".join(CHECKS))


class DemoError(Exception):
    """A console line the demo did not understand."""


class Console:
    def __init__(self, world: Sandbox, user: SlackUser, out: TextIO) -> None:
        self.world = world
        self.user = user
        self.out = out
        self.buttons: list[dict[str, Any]] = []

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def show(self, messages: list[dict[str, Any]], where: str) -> None:
        self.buttons = []
        for message in messages:
            kind = (
                "only you see this"
                if message.get("response_type") != "in_channel"
                else "posted in #failover"
            )
            self.say(f"┌─ {where} ({kind})")
            for line in render_message(message, self.buttons).splitlines():
                self.say(f"│ {line}")
            self.say("└─")

    async def run_line(self, line: str) -> bool:
        """Run one line; False when the console should stop."""
        words = line.split()  # the bot parses its own text; the console needs plain words
        if not words or words[0].startswith("#"):
            return True
        head = words[0].lower()
        if head in ("/failover", "failover"):
            text = line.strip().split(None, 1)[1] if len(words) > 1 else ""
            exchange = await self.user.command(text)
            if exchange.status != 200:
                self.say(f"(the bot answered HTTP {exchange.status}: {exchange.ack_body})")
            elif not exchange.replies:
                self.say("(no reply within 10 s)")
            else:
                took = (
                    f"acked in {exchange.ack_seconds * 1000:.0f} ms, "
                    f"answered in {exchange.reply_seconds or 0:.2f} s"
                )
                self.show(exchange.replies, f"failover bot · {took}")
        elif head == "break" and len(words) >= 3:
            await self._break(words[1], words[2], words[3:])
        elif head == "heal" and len(words) == 2:
            names = list(self.world.gateways) if words[1] == "all" else [self._region(words[1])]
            for name in names:
                await self.world.gateways[name].set_mode("healthy")
            self.say(f"(healed {', '.join(names)})")
        elif head == "gateways":
            for name, gw in self.world.gateways.items():
                self.say(f"  {name:10} {gw.state.describe():28} {gw.url}")
        elif head == "channel":
            messages = self.world.slack.channels.get(CHANNEL, [])
            if not messages:
                self.say("(nothing posted in #failover yet)")
            self.show([m | {"response_type": "in_channel"} for m in messages], "#failover")
        elif head == "click" and len(words) == 2 and words[1].isdigit():
            await self._click(int(words[1]))
        elif head == "wait" and len(words) == 2:
            await asyncio.sleep(float(words[1]))
        elif head == "help":
            self.say(CONSOLE_HELP)
        elif head in ("quit", "exit"):
            return False
        else:
            raise DemoError(f"not understood: {line.strip()!r} (type help)")
        return True

    def _region(self, name: str) -> str:
        if name not in self.world.gateways:
            raise DemoError(f"unknown region {name!r} (regions: {', '.join(self.world.gateways)})")
        return name

    async def _break(self, region: str, mode: str, rest: list[str]) -> None:
        name = self._region(region)
        check = next((w for w in rest if w in CHECKS), None)
        number = next(
            (float(w.rstrip("s")) for w in rest if w.rstrip("s").replace(".", "", 1).isdigit()),
            None,
        )
        try:
            state = await self.world.gateways[name].set_mode(
                mode,
                check=check,
                delay=number if mode == "slow" else None,
                period=number if mode == "flapping" else None,
            )
        except ValueError as exc:
            raise DemoError(str(exc)) from None
        self.say(f"({name} gateway is now {state.describe()})")

    async def _click(self, number: int) -> None:
        if not 1 <= number <= len(self.buttons):
            raise DemoError(f"there is no button {number} in the last reply")
        button = self.buttons[number - 1]
        exchange = await self.user.click(button.get("action_id", ""), button.get("value", ""))
        if exchange.status != 200:
            self.say(f"(the bot answered HTTP {exchange.status})")
        else:
            self.show(exchange.replies, "failover bot")


async def _terminal_lines() -> AsyncIterator[str]:
    while True:
        try:
            yield await asyncio.to_thread(input, "failover> ")
        except EOFError:
            return


async def _script_lines(path: Path, out: TextIO) -> AsyncIterator[str]:
    text = await asyncio.to_thread(path.read_text, encoding="utf-8")
    for line in text.splitlines():
        if line.strip():
            print(f"> {line}", file=out, flush=True)
        yield line


async def run_demo(base_config: str, script: Path | None = None, out: TextIO = sys.stdout) -> int:
    """Run the demo; the exit status is 1 when a script line was not understood."""
    with tempfile.TemporaryDirectory(prefix="failover-demo-") as tmp:
        world = Sandbox(base_config, tmp)
        await world.start()
        settings = world.bot_settings(f"sqlite+aiosqlite:///{tmp}/demo.db")
        bot: Bot = await migrated_bot(settings, watch=True)
        server = LocalServer(build_web_app(bot.slack))
        await server.start()
        user = SlackUser(f"{server.url}/slack/events", world.slack.url, world.signing_secret)
        console = Console(world, user, out)
        failed = 0
        try:
            if script is None:
                console.say(
                    "Failover bot demo: the bot, three sandbox gateways and Slack, on loopback."
                )
                console.say(
                    f"Regions: {', '.join(world.gateways)}. Type help, or /failover help.\n"
                )
            lines = _script_lines(script, out) if script else _terminal_lines()
            async for line in lines:
                try:
                    if not await console.run_line(line):
                        break
                except DemoError as exc:
                    failed += 1
                    console.say(f"(demo: {exc})")
        finally:
            await user.aclose()
            await server.close()
            await bot.aclose()
            await world.close()
        return 1 if failed and script else 0
