"""Human durations ("30s", "2h", "1m30s", "2.5s") to seconds and back."""

import re

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Seconds in ``text``; raises ValueError with the accepted forms when it is not a duration."""
    compact = text.strip().lower().replace(" ", "")
    pos, total = 0, 0.0
    for match in _PART.finditer(compact):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT[match.group(2)]
        pos = match.end()
    if not compact or pos != len(compact):
        raise ValueError(f"{text!r} is not a duration (use e.g. 500ms, 30s, 5m, 2h, 1m30s)")
    return total


def format_duration(seconds: float) -> str:
    """A short reading of ``seconds``: 0.35 -> "350 ms", 75 -> "1m15s"."""
    if seconds < 0.001:
        return "under 1 ms"  # not "<1 ms": "<" is markup to Slack's mrkdwn
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s" if secs else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"
