"""Answers to bad input and to the bot's own failures: short, ephemeral, saying what is right."""

from __future__ import annotations

from slack_sdk.models.blocks import Block

from bot.views.reply import Reply, clip, context, section


def usage_error(message: str, usage: str | None = None) -> Reply:
    message = clip(message, 600)  # it may echo what was typed, which may be anything
    blocks: list[Block] = [section(f":warning: {message}")]
    if usage and usage != "/failover help":
        blocks.append(context(f"Usage: `{usage}`  ·  `/failover help` lists every command"))
    else:
        blocks.append(context("`/failover help` lists every command"))
    text = f"{message} Usage: {usage}" if usage else message
    return Reply(text=text, blocks=blocks, outcome="rejected")


def internal_error(error_id: str) -> Reply:
    message = (
        "Something went wrong on the bot's side and the command did not complete. "
        f"Error id `{error_id}`: give it to whoever runs the bot, it is in their logs."
    )
    return Reply(text=message, blocks=[section(f":boom: {message}")], outcome="error")


def provider_error(message: str) -> Reply:
    """Cloudflare failed: say what it said; nothing was changed by this request."""
    text = f"Cloudflare: {clip(message, 600)}. Nothing was changed; try again in a minute."
    return Reply(text=text, blocks=[section(f":cloud: {text}")], outcome="error")
