from __future__ import annotations

import pytest

from bot.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("2.5s", 2.5),
        ("500ms", 0.5),
        ("5m", 300),
        ("2h", 7200),
        ("1m30s", 90),
        ("1d", 86400),
    ],
)
def test_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "5 seconds", "s", "1m-2s", "-5s"])
def test_reject(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_format() -> None:
    assert format_duration(0.0002) == "under 1 ms"
    assert format_duration(0.0123) == "12 ms"
    assert format_duration(2.25) == "2.2 s"
    assert format_duration(42) == "42 s"
    assert format_duration(75) == "1m15s"
    assert format_duration(7200) == "2h"
