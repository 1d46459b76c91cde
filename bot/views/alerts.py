"""The channel's incident message and its thread replies."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

from slack_sdk.models.blocks import ActionsBlock, Block, ButtonElement, ConfirmObject, HeaderBlock

from bot.durations import format_duration
from bot.reads import EntryView, IncidentView
from bot.views.actions import Action
from bot.views.reply import Reply, context, section
from bot.views.silences import until_text
from bot.views.status import STATE_EMOJI
from bot.views.text import escape, mention

SEVERITY_EMOJI = {
    "critical": ":red_circle:",
    "warning": ":large_yellow_circle:",
    "info": ":large_green_circle:",
}
KIND_LABEL = {
    "PoolDegraded": "Pool Degraded",
    "PoolDown": "Pool Down",
    "FailoverTriggered": "Failover Triggered",
    "NoHealthyPool": "No Healthy Pool",
    "GrayFailure": "Gray Failure",
    "TrafficRestored": "Traffic Restored",
    "Recovered": "Recovered",
    "RTOExceeded": "RTO Exceeded",
    "Note": "Note",
    "Closed": "Resolved",
    "Detected": "Detected",
    "AlertPosted": "Alert posted",
    "CloudflareHealth": "Cloudflare health",
    "CloudflareNotification": "Cloudflare notification",
    "Acknowledged": "Acknowledged",
}
MAX_LISTED = 5  # more changes than this for one pool in a window is flapping: say so, show the last


def _figure(value: float | None, target: float | None = None) -> str:
    if value is None:
        return "—"
    text = format_duration(value)
    if target is not None:
        text += " ✅" if value < target else f" ❌ (target {format_duration(target)})"
    return text


def incident_text(view: IncidentView) -> str:
    state = "RESOLVED" if view.closed_at else view.severity.upper()
    return f"Incident #{view.id} · {state} · {view.title}"


def incident_blocks(view: IncidentView) -> list[Block]:
    closed = view.closed_at is not None
    emoji = "✅" if closed else {"critical": "🔴", "warning": "🟡"}.get(view.severity, "🟢")
    blocks: list[Block] = [HeaderBlock(text=f"{emoji} {incident_text(view)}"[:150])]
    lines = []
    for region in view.regions:
        state = view.states.get(region)
        mark = STATE_EMOJI[state] if state else ":grey_question:"
        muted = ""
        if region in view.silenced:  # muted replies only: the message itself is always current
            until = view.silenced_until.get(region)
            muted = (
                f" · _silenced until {until_text(until, view.now)}_" if until else " · _silenced_"
            )
        lines.append(f"{mark} *{escape(region)}* {state or 'unknown'}{muted}")
    blocks.append(section("\n".join(lines) or "no region"))
    moved: dict[str, list[str]] = defaultdict(list)
    for geo, region in view.failed_over.items():
        if geo not in view.stranded:
            moved[region].append(geo)
    stranded: dict[str, list[str]] = defaultdict(list)
    for geo, users in view.stranded.items():
        stranded[users].append(geo)
    if moved or stranded:
        routing = [
            f"• {escape(' '.join(geos))} → *{escape(region)}*" for region, geos in moved.items()
        ]
        routing += [
            f"• {escape(' '.join(geos))}: *{escape(users)}*" for users, geos in stranded.items()
        ]
        blocks.append(section("*Routing now*\n" + "\n".join(routing)))
    end = view.closed_at or view.now
    f = view.figures
    blocks.append(
        context(
            f"began {view.began_at:%H:%M:%S} UTC · {'lasted' if closed else 'elapsed'} "
            f"{format_duration((end - view.began_at).total_seconds())} · "
            f"detect {_figure(f.time_to_detect)} · "
            f"RTO {_figure(f.rto, view.rto_target)}"
            + (f" · recover {_figure(f.time_to_recover)}" if closed else "")
        )
    )
    if (paging := page_line(view)) is not None:
        blocks.append(context(paging))
    buttons = []
    # Only a page PagerDuty took can be acknowledged there.
    if (
        view.paged
        and view.page_result == "accepted"
        and view.acknowledged_at is None
        and not closed
    ):
        buttons.append(
            ButtonElement(
                text="Acknowledge",
                action_id=Action.ACKNOWLEDGE,
                value=str(view.id),
                style="primary",
                confirm=ConfirmObject(
                    title="Acknowledge the page?",
                    text="PagerDuty stops notifying the on-call for this incident.",
                    confirm="Acknowledge",
                    deny="Cancel",
                ),
            )
        )
    buttons += [
        ButtonElement(
            text=f"Silence {region} 1h",
            action_id=f"{Action.SILENCE}:{region}",
            value=region,
            confirm=ConfirmObject(
                title="Silence alerts?",
                # a confirm dialog's text is mrkdwn (slack_sdk's default), so escaped too
                text=(
                    f"No thread replies for {escape(region)} for one hour (recoveries still post)."
                ),
                confirm="Silence",
                deny="Cancel",
            ),
        )
        for region in view.regions[:4]
        if region not in view.silenced and not closed
    ]
    buttons.append(
        ButtonElement(text="Show timeline", action_id=Action.TIMELINE, value=str(view.id))
    )
    blocks.append(ActionsBlock(block_id=f"incident-{view.id}", elements=buttons))
    return blocks


def page_line(view: IncidentView) -> str | None:
    """PagerDuty's side of the incident: what became of the page (still being sent, taken,
    refused, overtaken by the incident's end), and who acknowledged it where and when."""
    if not view.paged:
        return None
    result = view.page_result or ""
    if view.acknowledged_at is None:
        if result.startswith("failed: "):
            return f"📟 PagerDuty refused the page: {escape(result.removeprefix('failed: '))}"
        if result.startswith("skipped: "):
            return "📟 PagerDuty not paged: the incident was resolved before the page went out"
        if result.startswith("retrying: "):
            return f"📟 Paging PagerDuty: retrying, {escape(result.removeprefix('retrying: '))}"
        if result != "accepted":
            return "📟 Paging PagerDuty…"
        return "📟 Paged PagerDuty · not acknowledged yet"
    who = view.acknowledged_by or "someone"
    # From Slack the bot keeps the user id (a mention); from PagerDuty, the agent's name.
    name = mention(who) if view.acknowledged_via == "slack" else escape(who)
    where = "Slack" if view.acknowledged_via == "slack" else "PagerDuty"
    return (
        f"📟 Paged PagerDuty · Acknowledged by {name} in {where} at "
        f"{view.acknowledged_at:%H:%M} UTC"
    )


def entry_line(e: EntryView) -> str:
    # a note and its author are typed by a user, a reason may be Cloudflare's: all escaped
    label = escape(KIND_LABEL.get(e.kind, e.kind))
    emoji = SEVERITY_EMOJI.get(e.severity, "")
    where = f" · {escape(e.region)}" if e.region else ""
    who = f" ({mention(e.author)})" if e.author else ""  # a user id: a mention
    return f"{emoji} *{label}*{where} · {e.at:%H:%M:%S} UTC{who}\n{escape(e.text)}"


def thread_text(view: IncidentView, entries: Sequence[EntryView], reminder: bool) -> str:
    if reminder:
        return f"Still ongoing: {escape(incident_text(view))}"
    return escape(
        "; ".join(f"{KIND_LABEL.get(e.kind, e.kind)} {e.region or ''}".strip() for e in entries)
    )


def thread_blocks(view: IncidentView, entries: Sequence[EntryView], reminder: bool) -> list[Block]:
    if reminder:
        elapsed = format_duration((view.now - view.began_at).total_seconds())
        states = escape(", ".join(f"{r} {view.states.get(r, 'unknown')}" for r in view.regions))
        title = escape(view.title)
        return [section(f":bell: *Still ongoing* after {elapsed}: {title} ({states})")]
    if any(e.kind == "Closed" for e in entries):
        f = view.figures
        lasted = format_duration(((view.closed_at or view.now) - view.began_at).total_seconds())
        return [
            section(
                f":white_check_mark: *Resolved* after {lasted}\n"
                f"time to detect {_figure(f.time_to_detect)} · "
                f"RTO {_figure(f.rto, view.rto_target)} · "
                f"time to recover {_figure(f.time_to_recover)}"
            )
        ]
    if len(entries) > MAX_LISTED:
        first, last = entries[0], entries[-1]
        head = (
            f"*{len(entries)} changes* for {escape(first.region or 'the fleet')} between "
            f"{first.at:%H:%M:%S} and {last.at:%H:%M:%S} UTC (flapping), latest:"
        )
        return [section(head + "\n" + entry_line(last))]
    return [section("\n\n".join(entry_line(e) for e in entries))]


def acknowledged_reply(incident_id: int) -> Reply:
    text = (
        f"📟 You acknowledged incident #{incident_id}'s page: PagerDuty is told, and the "
        "incident message shows it."
    )
    return Reply(text=text, blocks=[section(text)])


def already_acknowledged_reply(
    incident_id: int, by: str | None, via: str | None, at: datetime | None
) -> Reply:
    who = mention(by) if via == "slack" and by else escape(by or "someone")
    where = "Slack" if via == "slack" else "PagerDuty"
    when = f" at {at:%H:%M} UTC" if at else ""
    text = f"Incident #{incident_id} was already acknowledged by {who} in {where}{when}."
    return Reply(text=text, blocks=[section(text)], outcome="rejected")
