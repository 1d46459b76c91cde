"""``/failover check``: the live load balancer against the plan, then the plan as Cloudflare will
run it; in each part, failures first."""

from __future__ import annotations

from collections.abc import Sequence

from slack_sdk.models.blocks import Block, HeaderBlock

from bot.plancheck import CheckLine
from bot.views.reply import Reply, context, section
from bot.views.text import escape


def _line(line: CheckLine) -> str:
    # details quote the account (names, monitor headers, descriptions): escaped
    item, detail = escape(line.item), escape(line.detail)
    if line.ok:
        return f":white_check_mark: {item}: {detail}"
    fix = f"\n      _fix: {escape(line.fix)}_" if line.fix else ""
    return f":x: *{item}*: {detail}{fix}"


def _part(title: str, lines: Sequence[CheckLine]) -> list[Block]:
    blocks: list[Block] = []
    chunk: list[str] = [title]
    ordered = [*(x for x in lines if not x.ok), *(x for x in lines if x.ok)]
    for text in [_line(ln) for ln in ordered]:
        if sum(len(t) + 1 for t in chunk) + len(text) > 2900:
            blocks.append(section("\n".join(chunk)))
            chunk = []
        chunk.append(text)
    blocks.append(section("\n".join(chunk)))
    return blocks


def check_reply(
    live: Sequence[CheckLine], plan: Sequence[CheckLine], hostname: str, source: str
) -> Reply:
    """``live`` against failover.toml (empty without Cloudflare); ``plan`` read from ``source``."""
    every = [*live, *plan]
    failed = [ln for ln in every if not ln.ok]
    title = (
        f"✅ {hostname}: {len(every)} checks pass"
        if not failed
        else f"❌ {hostname}: {len(failed)} of {len(every)} checks fail"
    )
    blocks: list[Block] = [HeaderBlock(text=title[:150])]
    if live:
        blocks += _part("*Live load balancer against failover.toml*", live)
    blocks += _part(f"*The plan as Cloudflare will run it* ({escape(source)})", plan)
    blocks.append(
        context(
            "Routing follows Cloudflare's documented rules: a geo region with its own list is "
            "served only by that list, then by the fallback pool, whatever the fallback's health"
        )
    )
    return Reply(text=escape(title), blocks=blocks)  # the header is plain_text, the text mrkdwn
