"""Silences: the answers to ``silence``, ``silences`` and ``unsilence``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from bot.durations import format_duration
from bot.reads import SilenceView
from bot.views.reply import Reply, context, section


def silenced_reply(s: SilenceView, length: float) -> Reply:
    text = (
        f"Silenced {s.region} for {format_duration(length)}, until {s.until:%H:%M} UTC: "
        f"no thread replies for it (recoveries still post). `/failover unsilence {s.region}` "
        "ends it."
    )
    return Reply(text=text, blocks=[section(f":no_bell: {text}"), context(f"reason: {s.reason}")])


def silences_reply(rows: Sequence[SilenceView], now: datetime) -> Reply:
    if not rows:
        return Reply(text="No region is silenced.", blocks=[section("No region is silenced.")])
    lines = [
        f"• *{s.region}* until {s.until:%H:%M} UTC "
        f"({format_duration((s.until - now).total_seconds())} left) by {s.created_by}: {s.reason}"
        for s in rows
    ]
    return Reply(text=f"{len(rows)} silences", blocks=[section("*Silences*\n" + "\n".join(lines))])


def unsilenced_reply(region: str, ended: bool) -> Reply:
    text = (
        f"{region} is no longer silenced."
        if ended
        else f"{region} was not silenced: nothing to do."
    )
    return Reply(text=text, blocks=[section(text)])
