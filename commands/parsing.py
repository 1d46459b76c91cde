"""Turning the text after ``/failover`` into words, forgiving Slack's typography."""

from __future__ import annotations

import html
import re
import shlex
from collections.abc import Iterable

from bot.errors import UsageError

_TYPOGRAPHY = str.maketrans(
    {"\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2018": "'", "\u2019": "'", "\u00a0": " "}
)
# Slack turns "--" into an em or en dash on some clients; a lone one before a word is a flag.
_DASH_FLAG = re.compile(r"(^|\s)[\u2014\u2013](?=\w)")
# Slack wraps links and mentions: <https://x|x>, <@U123|name>, <#C123|name>.
_SLACK_ESCAPE = re.compile(r"<([^<>|]*)(?:\|([^<>]*))?>")


def normalize(text: str) -> str:
    # Links and mentions first: their brackets are Slack's, while &lt; stands for a typed "<".
    text = _SLACK_ESCAPE.sub(lambda m: m.group(2) or m.group(1), text)
    text = html.unescape(text).translate(_TYPOGRAPHY)
    return _DASH_FLAG.sub(r"\1--", text).strip()


def tokenize(text: str) -> list[str]:
    try:
        return shlex.split(normalize(text))
    except ValueError:
        raise UsageError('A quote is not closed. Put a closing " after the quoted words.') from None


def pick(word: str, choices: Iterable[str]) -> str | None:
    """``word`` matched case-insensitively against ``choices``; None when it is none of them."""
    lowered = word.lower()
    return next((c for c in choices if c.lower() == lowered), None)
