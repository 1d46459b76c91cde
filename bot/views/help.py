"""``/failover help``: every subcommand with its usage, from the command modules themselves."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from bot.views.reply import Reply, context, section
from bot.views.text import escape


class Described(Protocol):
    @property
    def usage(self) -> str: ...
    @property
    def summary(self) -> str: ...


def help_reply(commands: Iterable[Described], regions: Iterable[str]) -> Reply:
    # usage lines hold <region> and <reason>: Slack would read those brackets as markup
    lines = [f"`/failover {escape(c.usage)}`\n{escape(c.summary)}" for c in commands]
    blocks = [
        section("*Failover bot*: health and failover operations for the gateway."),
        section("\n\n".join(lines)),
        context(f"Regions: {', '.join(f'`{escape(r)}`' for r in regions)}  ·  times are UTC"),
    ]
    text = "Commands: " + "; ".join(f"/failover {escape(c.usage)}" for c in commands)
    return Reply(text=text, blocks=blocks)
