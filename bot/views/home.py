"""The App Home tab's view."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from slack_sdk.models.blocks import Block, DividerBlock, HeaderBlock

from bot.monitor import PoolState
from bot.reads import Dashboard
from bot.views.reply import context, section
from bot.views.status import STATE_EMOJI
from bot.views.text import escape, mention


def home_view(board: Dashboard, at: datetime) -> dict[str, Any]:
    blocks: list[Block] = [HeaderBlock(text="Failover dashboard")]
    lines = []
    for region, state in board.regions.items():
        emoji = (
            STATE_EMOJI.get(PoolState(state), ":grey_question:")
            if state in PoolState._value2member_map_
            else ""
        )
        cloudflare = board.cloudflare.get(region, "unknown")
        lines.append(
            f"{emoji} *{escape(region)}* {escape(state)} · Cloudflare {escape(cloudflare)}"
        )
    blocks.append(section("\n".join(lines)))
    if board.moved or board.stranded:
        by_region: dict[str, list[str]] = defaultdict(list)
        for geo, region in board.moved.items():
            by_region[region].append(geo)
        by_users: dict[str, list[str]] = defaultdict(list)
        for geo, users in board.stranded.items():
            by_users[users].append(geo)
        routing = [f"• {escape(' '.join(g))} → {escape(r)}" for r, g in by_region.items()]
        routing += [
            f"• :x: {escape(' '.join(g))}: *{escape(users)}*" for users, g in by_users.items()
        ]
        blocks.append(section("*Routing away from home*\n" + "\n".join(routing)))
    else:
        blocks.append(section("*Routing*: every geo region on its own pool"))
    blocks.append(DividerBlock())
    blocks.append(
        section(
            "*Open incidents*\n" + ("\n".join(f"• {escape(i)}" for i in board.incidents) or "none")
        )
    )
    operations = [f"• {escape(o.text)} (by {mention(o.requested_by)})" for o in board.operations]
    blocks.append(section("*Drains and drills*\n" + ("\n".join(operations) or "none")))
    game_day = escape(board.next_game_day or "none scheduled")
    blocks.append(section(f"*Next game day*: {game_day}"))
    blocks.append(context(f"updated {at:%H:%M:%S} UTC · `/failover status` for the live probes"))
    return {"type": "home", "blocks": [b.to_dict() for b in blocks]}
