"""Block Kit as a terminal shows it: the demo prints exactly what Slack would be sent."""

from __future__ import annotations

import re
from typing import Any

EMOJI = {
    ":large_green_circle:": "🟢",
    ":large_yellow_circle:": "🟡",
    ":red_circle:": "🔴",
    ":white_circle:": "⚪",
    ":grey_question:": "❔",
    ":white_check_mark:": "✅",
    ":rotating_light:": "🚨",
    ":warning:": "⚠️ ",
    ":boom:": "💥",
    ":x:": "❌",
    ":memo:": "📝",
    ":no_bell:": "🔕",
    ":bell:": "🔔",
    ":sunny:": "☀️",
    ":hourglass_flowing_sand:": "⏳",
    ":leftwards_arrow_with_hook:": "↩️",
    ":information_source:": "ℹ️",
    ":mag:": "🔍",
    ":no_entry:": "⛔",
    ":raising_hand:": "🙋",
    ":calendar:": "📅",
    ":cloud:": "☁️",
}
_EMOJI = re.compile(r":[a-z0-9_+-]+:")
_LINK = re.compile(r"<([^|>]+)\|([^>]+)>")
_ITALIC = re.compile(r"(?<![\w_])_([^_\n]+)_(?![\w_])")
_BOLD = re.compile(r"(?<![\w*])\*([^*\n]+)\*(?![\w*])")


def _text(obj: Any) -> str:
    plain = isinstance(obj, dict) and obj.get("type") == "plain_text"
    if isinstance(obj, dict):
        obj = obj.get("text", "")
    text = _EMOJI.sub(lambda m: EMOJI.get(m.group(0), m.group(0)), str(obj))
    text = _ITALIC.sub(
        r"\1", _BOLD.sub(r"\1", text)
    )  # a terminal has no bold to spare; Slack's *x* reads as noise
    text = _LINK.sub(r"\2 (\1)", text)
    # mrkdwn shows &lt; &gt; &amp; as the characters they escape (after its links are read);
    # plain_text is shown as it is
    return text if plain else _unescape(text)


def _unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def render_blocks(blocks: list[dict[str, Any]], buttons: list[dict[str, Any]] | None = None) -> str:
    """Plain text for ``blocks``; buttons are numbered and appended to ``buttons`` if given."""
    lines: list[str] = []
    for block in blocks:
        kind = block.get("type")
        if kind == "header":
            title = _text(block["text"])
            lines += [title, "═" * min(len(title) + 2, 72)]
        elif kind == "section":
            if "text" in block:
                lines.append(_text(block["text"]))
            for f in block.get("fields", []):
                lines.append("  " + _text(f))
            if block.get("accessory", {}).get("type") == "button":
                lines.append(_button(block["accessory"], buttons))
        elif kind == "context":
            lines.append("  " + " · ".join(_text(e) for e in block.get("elements", [])))
        elif kind == "divider":
            lines.append("─" * 40)
        elif kind == "actions":
            lines.append("  ".join(_button(e, buttons) for e in block.get("elements", [])))
    return "\n".join(lines)


def _button(element: dict[str, Any], buttons: list[dict[str, Any]] | None) -> str:
    if buttons is None:
        return f"[{_text(element.get('text', ''))}]"
    buttons.append(element)
    return f"[{len(buttons)}: {_text(element.get('text', ''))}]"


def render_message(message: dict[str, Any], buttons: list[dict[str, Any]] | None = None) -> str:
    if message.get("blocks"):
        return render_blocks(message["blocks"], buttons)
    return _text(message.get("text", ""))
