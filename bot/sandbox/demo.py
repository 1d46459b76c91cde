"""The demo: the sandbox and the bot together, and a console that plays the operator.

Lines it understands: ``/failover ...``, ``break <region> <mode> [check|seconds]``,
``heal <region>|all``, ``gateways``, ``channel``, ``click <n>``, ``wait <seconds>``, ``help``,
``quit``, each as typed or as pasted from the README (a leading ``failover>`` prompt and a
trailing ``# comment`` are dropped). With a script or a pipe, each line is echoed after the prompt
and run in turn, no terminal needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any, TextIO

from bot.assembly import Bot, migrated_bot
from bot.sandbox.alerting import Delivery
from bot.sandbox.gateways import CHECKS, MODES
from bot.sandbox.pagerduty import Alert
from bot.sandbox.render import render_message
from bot.sandbox.servers import LocalServer
from bot.sandbox.slack_client import CHANNEL, SlackUser
from bot.sandbox.terminal import LoopThread, cleaned, echoed, typed
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
  pagerduty [ack <n>|down|up]   PagerDuty's alerts; acknowledge alert n there; an outage of it
  quit                          or Ctrl-D, or Ctrl-C at the prompt (Ctrl-C stops a command)
  Lines pasted with their `failover>` prompt run as typed; `# ...` ends a line as a comment.
  Up and down recall earlier lines.""".format(modes=", ".join(MODES), checks=", ".join(CHECKS))
THREAD_INDENT = "    "  # a thread's replies, under their parent message as Slack shows them


class DemoError(Exception):
    """A console line the demo did not understand."""


class Console:
    def __init__(self, world: Sandbox, user: SlackUser, out: TextIO) -> None:
        self.world = world
        self.user = user
        self.out = out
        self.buttons: list[dict[str, Any]] = []
        # What reaches PagerDuty is shown as it happens, as a pager would buzz.
        world.pagerduty.listeners.append(self._paged)
        world.cloudflare.alerting.listeners.append(self._notified)

    def _notified(self, delivery: Delivery) -> None:
        answer = (
            f"the bot answered HTTP {delivery.status}"
            if delivery.status
            else f"not delivered: {delivery.error}"
        )
        text = delivery.payload.get("text", "")
        self.say(f"(Cloudflare notified the bot: {text}; {answer})")

    def _paged(self, what: str, alert: Alert) -> None:
        latest = alert.log[-1].get("summary") if alert.log else None  # an update's own text
        self.say(f"(PagerDuty: alert {alert.number} {what}: {latest or alert.summary})")

    async def pagerduty(self, words: list[str]) -> None:
        """``pagerduty``: its alerts; ``ack <n>`` as a responder would in PagerDuty's app
        (a signed webhook tells the bot); ``down`` / ``up``: PagerDuty answers 503, or heals."""
        pd = self.world.pagerduty
        if words == ["down"]:
            pd.fail(503)
            self.say("(PagerDuty answers 503 to every event until `pagerduty up`)")
        elif words == ["up"]:
            pd.heal()
            self.say("(PagerDuty accepts events again)")
        elif len(words) == 2 and words[0] == "ack" and words[1].isdigit():
            alert = next((a for a in pd.alerts if a.number == int(words[1])), None)
            if alert is None:
                raise DemoError(f"there is no PagerDuty alert {words[1]} (try `pagerduty`)")
            await pd.acknowledge(alert.dedup_key)
        elif not words:
            if not pd.alerts:
                self.say("(nothing paged yet)")
            for a in pd.alerts:
                self.say(f"  alert {a.number} {a.status:12} {len(a.log)} events  {a.summary}")
        else:
            raise DemoError("pagerduty takes nothing, `ack <n>`, `down` or `up`")

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
            self._box(message, f"{where} ({kind})")

    def _box(self, message: dict[str, Any], title: str, indent: str = "") -> None:
        self.say(f"{indent}┌─ {title}")
        for line in render_message(message, self.buttons).splitlines():
            self.say(f"{indent}│ {line}")
        self.say(f"{indent}└─")

    def channel(self) -> None:
        """#failover as Slack shows it: each message, and its thread's replies under it."""
        messages = self.world.slack.channels.get(CHANNEL, [])
        if not messages:
            self.say("(nothing posted in #failover yet)")
        posted = {m.get("ts") for m in messages}
        replies: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for m in messages:
            parent = m.get("thread_ts")
            if parent and parent != m.get("ts") and parent in posted:
                replies[parent].append(m)
        self.buttons = []
        for m in messages:
            parent = m.get("thread_ts")
            if parent and parent != m.get("ts") and parent in posted:
                continue  # shown under its parent
            self._box(m, "#failover")
            thread = replies.get(str(m.get("ts")), [])
            for n, reply in enumerate(thread, 1):
                self._box(reply, f"reply {n} of {len(thread)} in its thread", THREAD_INDENT)

    async def run_line(self, line: str) -> bool:
        """Run one line; False when the console should stop."""
        line = cleaned(line)
        words = line.split()  # the bot parses its own text; the console needs plain words
        if not words:
            return True
        head = words[0].lower()
        if head in ("/failover", "failover"):
            text = line.split(None, 1)[1] if len(words) > 1 else ""
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
            self.channel()
        elif head == "click" and len(words) == 2 and words[1].isdigit():
            await self._click(int(words[1]))
        elif head == "wait" and len(words) == 2:
            await asyncio.sleep(self._seconds(words[1]))
        elif head == "pagerduty":
            await self.pagerduty(words[1:])
        elif head == "help":
            self.say(CONSOLE_HELP)
        elif head in ("quit", "exit"):
            return False
        else:
            raise DemoError(f"not understood: {line.strip()!r} (type help)")
        return True

    @staticmethod
    def _seconds(word: str) -> float:
        try:
            seconds = float(word.removesuffix("s"))
        except ValueError:
            seconds = -1.0
        if not 0 <= seconds <= 3600:
            raise DemoError(f"wait takes seconds, up to 3600 (got {word!r})")
        return seconds

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
            has = f"its buttons are 1 to {len(self.buttons)}" if self.buttons else "it has none"
            raise DemoError(f"there is no button {number} in the last reply ({has})")
        button = self.buttons[number - 1]
        exchange = await self.user.click(button.get("action_id", ""), button.get("value", ""))
        if exchange.status != 200:
            self.say(f"(the bot answered HTTP {exchange.status})")
        else:
            self.show(exchange.replies, "failover bot")


class Demo:
    """The sandbox world, the bot served over HTTP, and a console that drives them."""

    def __init__(
        self, base_config: Path, out: TextIO, notifications: bool = True, paging: bool = True
    ) -> None:
        self.paging = paging  # the bot pages the PagerDuty stand-in, which answers by webhook
        self.base_config = base_config
        self.out = out
        self.notifications = notifications  # the stand-in sends Cloudflare's alerts to the bot
        self._opened = contextlib.AsyncExitStack()

    async def open(self) -> Console:
        stack = self._opened
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="failover-demo-"))
        world = Sandbox(self.base_config, tmp, notifications=self.notifications, paging=self.paging)
        await world.start()
        stack.push_async_callback(world.close)
        settings = world.bot_settings(f"sqlite+aiosqlite:///{tmp}/demo.db")
        bot: Bot = await migrated_bot(settings, watch=True)
        stack.push_async_callback(bot.aclose)
        server = LocalServer(
            build_web_app(bot.slack, bot.engine, settings=bot.settings, webhooks=bot.webhooks)
        )
        await server.start()
        stack.push_async_callback(server.close)
        world.page_bot(server.url)
        if self.notifications:
            await world.notify_bot(server.url, settings.database_url)
        user = SlackUser(f"{server.url}/slack/events", world.slack.url, world.signing_secret)
        stack.push_async_callback(user.aclose)
        return Console(world, user, self.out)

    async def close(self) -> None:
        """Close what was opened, the last first."""
        await self._opened.aclose()


def run_demo(
    base_config: str | Path,
    script: Path | None = None,
    out: TextIO = sys.stdout,
    source: TextIO = sys.stdin,
) -> int:
    """Run the demo on lines from ``script``, else from ``source``: typed at a terminal, or piped.

    The exit status is 1 when a line of a script or a pipe was not understood. At a terminal,
    Ctrl-C stops the command that runs, and at the prompt leaves (status 0, as Ctrl-D and quit:
    leaving is no error). Elsewhere Ctrl-C stops the demo (KeyboardInterrupt, raised again).
    """
    at_terminal = script is None and source.isatty()
    loop = LoopThread()
    demo = Demo(Path(base_config), out)
    failed = 0
    try:
        console = loop.run(demo.open())
        if script is None:
            console.say(
                "Failover bot demo: the bot, three sandbox gateways and Slack, on loopback."
            )
            console.say(
                f"Regions: {', '.join(console.world.gateways)}. Type help, or /failover help.\n"
            )
        if at_terminal:
            lines = typed()
        elif script is not None:
            lines = echoed(script.read_text(encoding="utf-8").splitlines(), out)
        else:
            lines = echoed(source, out)
        for line in lines:
            try:
                if not loop.run(console.run_line(line)):
                    break
            except DemoError as exc:
                failed += 1
                console.say(f"(demo: {exc})")
            except KeyboardInterrupt:
                if not at_terminal:
                    raise
                console.say("(stopped)")  # back to the prompt, as a shell does
    finally:
        try:
            loop.run(demo.close())
        finally:
            loop.close()
    return 1 if failed and not at_terminal else 0
