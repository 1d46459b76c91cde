"""Turning the text after ``/failover`` into words, forgiving Slack's typography."""

from __future__ import annotations

import html
import re
import shlex
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.errors import UsageError

_TYPOGRAPHY = str.maketrans(
    {"\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2018": "'", "\u2019": "'", "\u00a0": " "}
)
# Slack turns "--" into an em or en dash on some clients; a lone one before a word is a flag.
_DASH_FLAG = re.compile(r"(^|\s)[\u2014\u2013](?=\w)")
# Slack wraps links and mentions: <https://x|x>, <@U123|name>, <#C123|name>.
_SLACK_ESCAPE = re.compile(r"<([^<>|]*)(?:\|([^<>]*))?>")
# What a command may be, checked before any parsing: shlex took 22.7 s on 976 KiB, blocking the
# event loop. Slack's own box holds less; the longest real command is a drain reason.
MAX_TEXT = 4000
# A record's number: ASCII digits only ('²'.isdigit() and '０'.isdigit() are True, and int()
# takes '٣'), and no more than the database's INTEGER holds (PostgreSQL's is 32-bit signed).
_RECORD_ID = re.compile(r"#?([0-9]{1,10})")
MAX_RECORD_ID = 2**31 - 1


def normalize(text: str) -> str:
    # Links and mentions first: their brackets are Slack's, while &lt; stands for a typed "<".
    # The words are unescaped to be matched and stored as typed; every view escapes them again
    # (bot/views/text.py), so a typed "<!channel>" is never posted as markup.
    text = _SLACK_ESCAPE.sub(lambda m: m.group(2) or m.group(1), text)
    text = html.unescape(text).translate(_TYPOGRAPHY)
    return _DASH_FLAG.sub(r"\1--", text).strip()


def tokenize(text: str) -> list[str]:
    if len(text) > MAX_TEXT:
        raise UsageError(
            f"That command is {len(text):,} characters long; /failover takes at most "
            f"{MAX_TEXT:,} characters."
        )
    try:
        return shlex.split(normalize(text))
    except ValueError:
        raise UsageError('A quote is not closed. Put a closing " after the quoted words.') from None


def record_id(word: str) -> int | None:
    """``12`` or ``#12`` as a number an incident or an operation can have; None otherwise."""
    found = _RECORD_ID.fullmatch(word)
    if found is None or not 0 < int(found.group(1)) <= MAX_RECORD_ID:
        return None
    return int(found.group(1))


def pick(word: str, choices: Iterable[str]) -> str | None:
    """``word`` matched case-insensitively against ``choices``; None when it is none of them."""
    lowered = word.lower()
    return next((c for c in choices if c.lower() == lowered), None)


@dataclass(frozen=True)
class Option:
    """A ``--flag`` a command accepts: a switch, or one that takes a value.

    ``takes`` says what the value is, for the error when it is missing ("a duration, e.g.
    `--for 2h`"); ``convert`` turns it into what the command wants and raises ValueError with a
    sentence when it cannot; ``greedy`` takes every word up to the next flag (a date and a time);
    ``many`` collects each use.
    """

    flag: str
    takes: str | None = None
    convert: Callable[[str], object] = str
    greedy: bool = False
    many: bool = False


@dataclass
class Parsed:
    values: dict[str, Any] = field(default_factory=dict)  # by flag, without the dashes
    words: list[str] = field(default_factory=list)  # everything that is not an option

    def get(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, default)


def parse_options(words: Sequence[str], options: Sequence[Option], usage: str) -> Parsed:
    """Options anywhere among ``words``; each problem is one UsageError with the usage line."""
    known = {o.flag: o for o in options}
    parsed = Parsed()
    rest = list(words)
    while rest:
        word = rest.pop(0)
        option = known.get(word.lower())
        if option is None:
            if word.startswith("--") and len(word) > 2:
                flags = ", ".join(f"`{o.flag}`" for o in options) or "none"
                raise UsageError(f"Unknown option `{word[:40]}` (options: {flags}).", usage)
            parsed.words.append(word)
            continue
        name = option.flag.removeprefix("--").replace("-", "_")
        if option.takes is None:
            parsed.values[name] = True
            continue
        taken = []
        while rest and not (rest[0].startswith("--") and rest[0].lower() in known):
            taken.append(rest.pop(0))
            if not option.greedy:
                break
        if not taken:
            raise UsageError(f"`{option.flag}` needs {option.takes}.", usage)
        try:
            value = option.convert(" ".join(taken))
        except ValueError as exc:
            raise UsageError(str(exc), usage) from None
        if option.many:
            parsed.values.setdefault(name, []).append(value)
        else:
            parsed.values[name] = value
    return parsed
