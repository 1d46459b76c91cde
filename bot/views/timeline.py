"""Incident lists, timelines, and the Markdown postmortem draft."""

from __future__ import annotations

from collections.abc import Sequence

from slack_sdk.models.blocks import Block, HeaderBlock

from bot.durations import format_duration
from bot.reads import IncidentView
from bot.views.alerts import KIND_LABEL, _figure, incident_text
from bot.views.reply import Reply, context, section
from bot.views.text import escape, mention

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
            f"*#{v.id}* {escape(v.title)} · {v.severity} · {state} · "
            f"began {v.began_at:%Y-%m-%d %H:%M} UTC · {lasted} · "
            f"RTO {_figure(v.figures.rto, v.rto_target)}"
        )
    blocks: list[Block] = [section("*Incidents* (newest first)\n" + "\n".join(lines))]
    blocks.append(
        context(escape("`/failover timeline <id>` for one; add `markdown` for a postmortem draft"))
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
    # notes and their authors are typed by users; Cloudflare's reasons are its words
    lines = [
        f"`{e.at:%H:%M:%S}` *{escape(KIND_LABEL.get(e.kind, e.kind))}*"
        f"{' · ' + escape(e.region) if e.region else ''}"
        f"{' (' + mention(e.author) + ')' if e.author else ''}: {escape(e.text)}"
        for e in v.entries
    ]
    blocks += [section(chunk) for chunk in _chunks(lines)]
    blocks.append(
        context(f"times UTC · `/failover timeline {v.id} markdown` for a postmortem draft")
    )
    return Reply(text=escape(incident_text(v)), blocks=blocks[:50])


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


_MARKDOWN_CELL = str.maketrans(
    {"\\": "\\\\", "|": "\\|", "`": "\\`", "&": "&amp;", "<": "&lt;", ">": "&gt;"}
)


def _cell(text: object) -> str:
    """``text`` as one Markdown table cell that stays one: a pipe would end the cell, a newline
    the row (and the next line could be a heading or a fence), a backtick open code that runs on
    (or, three of them, close the fence Slack shows the draft in), ``<`` raw HTML such as a
    comment that hides the rest. Backslashes first, so that ``\\|`` cannot undo the escape
    (GFM: "include a pipe in a cell's content by escaping it")."""
    return " <br> ".join(str(text).translate(_MARKDOWN_CELL).splitlines())


def postmortem_markdown(v: IncidentView) -> str:
    f = v.figures
    end = v.closed_at or v.now
    lasted = format_duration((end - v.began_at).total_seconds())
    rto, rejoin = format_duration(v.rto_target), format_duration(v.rejoin_target)
    lines = [
        f"# Incident #{v.id}: {_cell(v.title)}",
        "",
        f"- Severity: {_cell(v.severity)}",
        f"- Regions: {_cell(', '.join(v.regions))}",
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
        label = _cell(KIND_LABEL.get(e.kind, e.kind))
        lines.append(
            f"| {e.at:%Y-%m-%d %H:%M:%S} | {label} | {_cell(e.region or '')} "
            f"| {_cell(e.text + who)} | {_cell(e.source)} |"
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
    # Slack reads &, < and > even inside a code block; chunked after escaping, so that no
    # section is clipped past its closing fence
    chunks = _chunks([escape(line) for line in text.splitlines()])
    blocks: list[Block] = [section(f"*Postmortem draft for incident #{v.id}* (Markdown)")]
    blocks += [section(f"```{chunk}```") for chunk in chunks]
    return Reply(text=escape(text), blocks=blocks[:50])


def noted_reply(number: int, text: str) -> Reply:
    return Reply(
        text=f"Noted on incident #{number}.",
        blocks=[section(f":memo: Noted on incident #{number}: {escape(text)}")],
    )
