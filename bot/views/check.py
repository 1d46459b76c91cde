"""``/failover check``: one line per checklist item, failures first."""

from __future__ import annotations

from slack_sdk.models.blocks import Block, HeaderBlock

from bot.plancheck import CheckLine
from bot.views.reply import Reply, context, section


def _line(line: CheckLine) -> str:
    if line.ok:
        return f":white_check_mark: {line.item}: {line.detail}"
    fix = f"\n      _fix: {line.fix}_" if line.fix else ""
    return f":x: *{line.item}*: {line.detail}{fix}"


def check_reply(lines: list[CheckLine], hostname: str) -> Reply:
    failed = [ln for ln in lines if not ln.ok]
    title = (
        f"✅ {hostname} matches the plan: {len(lines)} checks pass"
        if not failed
        else f"❌ {hostname}: {len(failed)} of {len(lines)} checks differ from the plan"
    )
    blocks: list[Block] = [HeaderBlock(text=title[:150])]
    chunk: list[str] = []
    for text in [_line(ln) for ln in failed + [ln for ln in lines if ln.ok]]:
        if sum(len(t) + 1 for t in chunk) + len(text) > 2900:
            blocks.append(section("\n".join(chunk)))
            chunk = []
        chunk.append(text)
    if chunk:
        blocks.append(section("\n".join(chunk)))
    blocks.append(
        context("Live load balancer read now, held against failover.toml and the seed's checklist")
    )
    return Reply(text=title, blocks=blocks)
