"""Silences: the answers to ``silence``, ``silences`` and ``unsilence``, and the channel's
announcements of a silence and of its end."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from slack_sdk.models.blocks import Block

from bot.durations import format_duration
from bot.reads import SilenceNotice, SilenceView
from bot.views.reply import Reply, context, section
from bot.views.text import escape


def until_text(until: datetime, now: datetime) -> str:
    """``15:30 UTC`` when that is today (UTC), else with the date: a 24 h silence ends tomorrow."""
    until, now = until.astimezone(UTC), now.astimezone(UTC)
    return f"{until:%H:%M} UTC" if until.date() == now.date() else f"{until:%Y-%m-%d %H:%M} UTC"


def silenced_reply(s: SilenceView, length: float) -> Reply:
    until = until_text(s.until, s.until - timedelta(seconds=length))
    text = (
        f"Silenced {s.region} for {format_duration(length)}, until {until}: "
        f"no thread replies for it (recoveries still post; incident messages always do); "
        f"the channel is told. `/failover unsilence {s.region}` ends it."
    )
    return Reply(
        text=text,
        blocks=[section(f":no_bell: {text}"), context(f"reason: {escape(s.reason)}")],
    )


def silence_notice_text(n: SilenceNotice) -> str:
    """What the channel reads when a region is silenced or unsilenced, or its silence expires."""
    until = until_text(n.until, n.now)
    who, reason = escape(n.created_by), escape(n.reason)
    if n.kind == "silence":
        length = format_duration((n.until - n.at).total_seconds())
        return (
            f"{n.region} silenced by {who} until {until} ({length}): its thread replies are "
            f"muted; incident messages and recoveries still post. Reason: {reason}"
        )
    if n.kind == "unsilence":
        return (
            f"{n.region} unsilenced by {escape(n.ended_by or 'someone')} at "
            f"{until_text(n.at, n.now)} (silenced by {who} until {until}; reason: {reason}): "
            "its thread replies post again."
        )
    return (
        f"{n.region}'s silence expired at {until} (silenced by {who}; reason: {reason}): "
        "its thread replies post again."
    )


def silence_notice_blocks(n: SilenceNotice) -> list[Block]:
    emoji = ":no_bell:" if n.kind == "silence" else ":bell:"
    return [section(f"{emoji} {silence_notice_text(n)}")]


def silences_reply(rows: Sequence[SilenceView], now: datetime) -> Reply:
    if not rows:
        return Reply(text="No region is silenced.", blocks=[section("No region is silenced.")])
    lines = [
        f"• *{s.region}* until {until_text(s.until, now)} "
        f"({format_duration((s.until - now).total_seconds())} left) by {escape(s.created_by)}: "
        f"{escape(s.reason)}"
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
