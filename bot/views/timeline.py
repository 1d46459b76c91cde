"""Incident lists, timelines, and the Markdown postmortem draft."""

from __future__ import annotations

from collections.abc import Sequence

from slack_sdk.models.blocks import Block, HeaderBlock

from bot.durations import format_duration
from bot.reads import IncidentView
from bot.views.alerts import KIND_LABEL, _figure, incident_text
from bot.views.reply import Reply, context, section

SECTION_LIMIT = 2900


def incidents_reply(views: Sequence[IncidentView]) -> Reply:
    if not views:
        return Reply(
            text="No incidents yet.", blocks=[section("No incidents recorded yet. :sunny:")]
        )
    lines = []
    for v in views:
        end = v.closed_at or v.now
        state = "open" if v.closed_at is None else "closed"
        lasted = format_duration((end - v.began_at).total_seconds())
        lines.append(
            f"*#{v.id}* {v.title} · {v.severity} · {state} · "
            f"began {v.began_at:%Y-%m-%d %H:%M} UTC · {lasted} · "
            f"RTO {_figure(v.figures.rto, v.rto_target)}"
        )
    blocks: list[Block] = [section("*Incidents* (newest first)\n" + "\n".join(lines))]
    blocks.append(
        context("`/failover timeline <id>` for one; add `markdown` for a postmortem draft")
    )
    return Reply(text=f"{len(views)} incidents", blocks=blocks)


def timeline_reply(v: IncidentView) -> Reply:
    f = v.figures
    blocks: list[Block] = [HeaderBlock(text=incident_text(v)[:150])]
    blocks.append(
        section(
            f"time to detect {_figure(f.time_to_detect)} · RTO {_figure(f.rto, v.rto_target)} · "
            f"time to recover {_figure(f.time_to_recover)}"
        )
    )
    lines = [
        f"`{e.at:%H:%M:%S}` *{KIND_LABEL.get(e.kind, e.kind)}*"
        f"{' · ' + e.region if e.region else ''}"
        f"{' (' + e.author + ')' if e.author else ''}: {e.text}"
        for e in v.entries
    ]
    blocks += [section(chunk) for chunk in _chunks(lines)]
    blocks.append(
        context(f"times UTC · `/failover timeline {v.id} markdown` for a postmortem draft")
    )
    return Reply(text=incident_text(v), blocks=blocks[:50])


def _chunks(lines: Sequence[str]) -> list[str]:
    chunks: list[str] = []
    current: list[str] = []
    for line in lines:
        if current and sum(len(x) + 1 for x in current) + len(line) > SECTION_LIMIT:
            chunks.append("\n".join(current))
            current = []
        current.append(line[:SECTION_LIMIT])
    if current:
        chunks.append("\n".join(current))
    return chunks


def _target(value: float | None, target: float) -> str:
    if value is None:
        return "—"
    return "met" if value < target else "missed"


def postmortem_markdown(v: IncidentView) -> str:
    f = v.figures
    end = v.closed_at or v.now
    lasted = format_duration((end - v.began_at).total_seconds())
    rto, rejoin = format_duration(v.rto_target), format_duration(v.rejoin_target)
    lines = [
        f"# Incident #{v.id}: {v.title}",
        "",
        f"- Severity: {v.severity}",
        f"- Regions: {', '.join(v.regions)}",
        f"- Began: {v.began_at:%Y-%m-%d %H:%M:%S} UTC",
        f"- {'Closed' if v.closed_at else 'Still open at'}: {end:%Y-%m-%d %H:%M:%S} UTC ({lasted})",
        "",
        "## Figures",
        "",
        "| figure | measured | target | |",
        "|---|---|---|---|",
        f"| time to detect | {_figure(f.time_to_detect)} | | |",
        f"| RTO (failover as users see it) | {_figure(f.rto)} | < {rto} "
        f"| {_target(f.rto, v.rto_target)} |",
        f"| time to recover (rejoin) | {_figure(f.time_to_recover)} | < {rejoin} "
        f"| {_target(f.time_to_recover, v.rejoin_target)} |",
        "",
        "## Timeline (UTC)",
        "",
        "| time | event | region | details | source |",
        "|---|---|---|---|---|",
    ]
    for e in v.entries:
        who = f" ({e.author})" if e.author else ""
        text = e.text.replace("|", "/")
        label = KIND_LABEL.get(e.kind, e.kind)
        lines.append(
            f"| {e.at:%Y-%m-%d %H:%M:%S} | {label} | {e.region or ''} | {text}{who} | {e.source} |"
        )
    lines += [
        "",
        "## Cause",
        "",
        "_To be written._",
        "",
        "## What went well, what did not",
        "",
        "_To be written._",
        "",
        "## Actions",
        "",
        "- [ ] _owner: action (due date)_",
    ]
    return "\n".join(lines) + "\n"


def markdown_reply(v: IncidentView) -> Reply:
    text = postmortem_markdown(v)
    chunks = _chunks(text.splitlines())
    blocks: list[Block] = [section(f"*Postmortem draft for incident #{v.id}* (Markdown)")]
    blocks += [section(f"```{chunk}```") for chunk in chunks]
    return Reply(text=text, blocks=blocks[:50])


def noted_reply(number: int, text: str) -> Reply:
    return Reply(
        text=f"Noted on incident #{number}.",
        blocks=[section(f":memo: Noted on incident #{number}: {text}")],
    )
