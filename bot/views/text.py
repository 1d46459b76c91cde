"""Text from users and peers as Slack shows it: data, never markup.

Slack reads ``&``, ``<`` and ``>`` in mrkdwn (and in a message's top-level ``text``) as control
characters: ``<!channel>`` pings a channel, ``<@U…>`` mentions, ``<http://x|label>`` is a link
whose label hides where it goes. Slack's "Formatting text for app surfaces" says to replace
exactly these three with ``&amp;``, ``&lt;`` and ``&gt;`` when they are not meant for parsing, and
not to entity-encode anything else (https://api.slack.com/reference/surfaces/formatting#escaping,
now https://docs.slack.dev/messaging/formatting-message-text#escaping). Every reason, note,
relay answer, Cloudflare name and typed word goes through ``escape`` before it reaches mrkdwn;
plain_text (headers, buttons, confirm dialogs) is never parsed, so it is left as it is.
"""

from __future__ import annotations

import re

# Slack's user ids: U… for users, W… for Enterprise Grid users; nothing else becomes a mention.
_USER_ID = re.compile(r"[UW][A-Z0-9]{2,}")
_ENTITIES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})


def escape(text: object) -> str:
    """``text`` for mrkdwn: shown literally, whatever it holds (``&`` first, so none doubles)."""
    return str(text).translate(_ENTITIES)


def mention(user_id: str) -> str:
    """``<@U…>`` for a Slack user id the bot holds (a requester, an approver); anything else, such
    as a drill's requester ``schedule``, is shown as escaped text."""
    return f"<@{user_id}>" if _USER_ID.fullmatch(user_id) else escape(user_id)


# A journal line that names who acted opens with the bot's own words and that person's Slack
# user id, taken from a signed request (bot/operations/workflow.py, run.py); a thread note puts
# its time first. Only there, at the start, where no reason or peer's text can be, does an id
# become a mention.
_ACTOR = re.compile(
    r"^((?:\d\d:\d\d:\d\d UTC · )?(?:stopping: )?"
    r"(?:(?:proposed|confirmed|approved|cancelled|cancel asked|restore asked|extended) by "
    r"|refused when ))([UW][A-Z0-9]{2,})\b"
)


def with_actor(escaped: str) -> str:
    """An escaped journal line with the user who acted, named at its start, as ``<@U…>``."""
    return _ACTOR.sub(lambda m: f"{m.group(1)}<@{m.group(2)}>", escaped, count=1)
