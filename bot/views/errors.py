"""Answers to bad input and to the bot's own failures: short, ephemeral, saying what is right."""

from __future__ import annotations

from slack_sdk.models.blocks import Block

from bot.views.reply import Reply, clip, context, section
from bot.views.text import escape


def usage_error(message: str, usage: str | None = None, *, roster: str = "") -> Reply:
    """``message`` may echo what was typed, so it is escaped whole; ``roster`` is the bot's own
    mrkdwn (the operators' or approvers' mentions from ``[access]``), appended as it is."""
    message = escape(clip(message, 600))
    message += f" {roster}" if roster else ""
    blocks: list[Block] = [section(f":warning: {message}")]
    if usage and usage != "/failover help":
        blocks.append(context(f"Usage: `{escape(usage)}`  ·  `/failover help` lists every command"))
    else:
        blocks.append(context("`/failover help` lists every command"))
    text = f"{message} Usage: {escape(usage)}" if usage else message
    return Reply(text=text, blocks=blocks, outcome="rejected")


def internal_error(error_id: str) -> Reply:
    message = (
        "Something went wrong on the bot's side and the command did not complete. "
        f"Error id `{error_id}`: give it to whoever runs the bot, it is in their logs."
    )
    return Reply(text=message, blocks=[section(f":boom: {message}")], outcome="error")


def provider_error(message: str) -> Reply:
    """Cloudflare failed: say what it said; nothing was changed by this request."""
    text = f"Cloudflare: {escape(clip(message, 600))}. Nothing was changed; try again in a minute."
    return Reply(text=text, blocks=[section(f":cloud: {text}")], outcome="error")


def database_unavailable(reason: str, error_id: str) -> Reply:
    """The database failed: the command needs it, so it did not complete."""
    text = (
        f"The database is unavailable: {escape(clip(reason, 300))}. The command did not "
        f"complete; try again once it is back. Error id `{error_id}` is in the bot's log."
    )
    return Reply(text=text, blocks=[section(f":floppy_disk: {text}")], outcome="error")
