"""``/failover status``: a verdict on top, then each region with its origins and evidence."""

from __future__ import annotations

from slack_sdk.models.blocks import Block, HeaderBlock

from bot.durations import format_duration
from bot.monitor import PoolState
from bot.observations import ProbeResult
from bot.status import FleetStatus, RegionStatus
from bot.views.reply import Reply, context, section

STATE_EMOJI = {
    PoolState.HEALTHY: ":large_green_circle:",
    PoolState.DEGRADED: ":large_yellow_circle:",
    PoolState.DOWN: ":red_circle:",
    PoolState.DISABLED: ":white_circle:",
    PoolState.UNKNOWN: ":grey_question:",
}
MAX_ORIGINS_SHOWN = 12  # a section holds 3,000 characters; list the worst first


def _origin_line(p: ProbeResult) -> str:
    latency = f", {format_duration(p.latency)}" if p.latency is not None else ""
    if p.healthy:
        return f"• `{p.origin}` healthy{latency}"
    tries = f", {p.attempts} attempts" if p.attempts > 1 else ""
    return f"• `{p.origin}` *{p.reason}*{latency}{tries}"


def _region_block(rs: RegionStatus) -> Block:
    r = rs.region
    head = f"{STATE_EMOJI[rs.state]} *{r.name}* ({r.role}) · pool `{r.pool}` · *{rs.state}*"
    worst_first = sorted(rs.probes, key=lambda p: (p.healthy, p.origin))
    lines = [_origin_line(p) for p in worst_first[:MAX_ORIGINS_SHOWN]]
    hidden = len(worst_first) - MAX_ORIGINS_SHOWN
    if hidden > 0:
        lines.append(f"• … and {hidden} more")
    return section("\n".join([head, *lines]))


def status_reply(status: FleetStatus, probe_desc: str, public: bool = False) -> Reply:
    icon = ":white_check_mark:" if status.healthy else ":rotating_light:"
    verdict = status.verdict
    blocks: list[Block] = [HeaderBlock(text=f"{'✅' if status.healthy else '🚨'} {verdict}"[:150])]
    blocks += [_region_block(rs) for rs in status.regions]
    blocks.append(
        context(
            f"Bot's own probes, from where the bot runs · {status.checked_at:%H:%M:%S} UTC · "
            f"took {format_duration(status.elapsed)} · {probe_desc}"
        )
    )
    return Reply(text=f"{icon} Failover status: {verdict}", blocks=blocks, public=public)
