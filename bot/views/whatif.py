"""``/failover whatif``: every geo region's fate under a hypothetical outage, worst first."""

from __future__ import annotations

from slack_sdk.models.blocks import Block, HeaderBlock

from bot.routing import Users
from bot.views.reply import Reply, context, section
from bot.views.text import escape
from bot.whatif import Row, WhatIf

GETS = {
    Users.ORIGIN_ERRORS: (
        "users get errors: what the unhealthy fallback's origins answer (521 when they refuse "
        "connections, 522 when they time out, or their own 5xx)"
    ),
    Users.ERROR_1016: "users get Cloudflare's 530 (error 1016): the fallback is disabled",
}


def _line(row: Row) -> str:
    # pool names and geo codes may be the account's own, unknown to failover.toml: escaped
    geos, now, after = escape(" ".join(row.geos)), escape(row.now), escape(row.after)
    target = f"the fallback {after}" if row.fallback else after
    if row.unnoticed:
        return (
            f":x: {geos}: stay on {after}, which is down: *no monitor, so Cloudflare never "
            "notices and users get its errors*"
        )
    if not row.healthy and row.now == row.after:
        return f":x: {geos}: no failover, they stay on {target}: *{GETS[row.users]}*"
    if not row.healthy:
        return f":x: {geos}: {now} → *{target}*: *{GETS[row.users]}*"
    if row.now == row.after:
        return f":white_check_mark: {geos}: stay on {after}"
    return f":large_yellow_circle: {geos}: {now} → *{target}*, served"


def whatif_reply(w: WhatIf, source: str) -> Reply:
    what = " and ".join(f"{region} is {state}" for region, state in w.changes.items())
    stranded = [g for r in w.rows if not r.healthy for g in r.geos]
    moved = [g for r in w.rows if r.healthy and r.moves for g in r.geos]
    if stranded:
        summary = f"{' '.join(stranded)} would have no healthy pool: their users would get errors"
    elif moved:
        summary = f"every geo region stays served; {' '.join(moved)} would move"
    else:
        summary = "nothing would move"
    rows = sorted(w.rows, key=lambda r: (r.healthy, not r.moves))
    blocks: list[Block] = [
        HeaderBlock(text=f"What if {what}?"[:150]),
        section(f"*{escape(summary)}*\n" + "\n".join(_line(r) for r in rows)),
    ]
    notes = [w.notice] if w.notice else []
    if w.unhealthy_now:
        notes.append(f"already not healthy, and kept so: {', '.join(w.unhealthy_now)}")
    notes += [f":warning: {n}" for n in w.notes]
    notes.append(f"computed from {source}; nothing was changed")
    blocks.append(context(*(escape(n) for n in notes)))
    return Reply(text=escape(f"What if {what}: {summary}"), blocks=blocks)
