"""The router with a status service that fails: the user gets an id, the log has it too."""

from __future__ import annotations

import logging
import re

import pytest

from bot.fleet import Fleet
from bot.fleetstatus import FleetStatus
from bot.invocation import Invocation
from bot.status import StatusService
from commands.base import Services
from commands.parsing import normalize, tokenize
from commands.router import Router


class Broken(StatusService):
    def __init__(self) -> None:
        pass

    async def check(self, regions: list[str] | None = None) -> FleetStatus:
        raise RuntimeError("database exploded")


class Audit:
    def __init__(self, fail: bool = False) -> None:
        self.rows: list[tuple[str, str, str | None]] = []
        self.fail = fail

    async def record_command(
        self,
        invocation: Invocation,
        outcome: str,
        detail: str,
        error_id: str | None,
        seconds: float,
    ) -> None:
        if self.fail:
            raise OSError("disk full")
        self.rows.append((invocation.text, outcome, error_id))


async def test_unexpected_error_shows_an_id_that_is_in_the_log(
    fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    audit = Audit()
    router = Router(Services(fleet, Broken()), audit)
    reply = await router.handle(Invocation(user_id="U1", text="status"))
    found = re.search(r"Error id `([0-9a-f]{8})`", reply.text)
    assert found, reply.text
    assert "database exploded" not in reply.text and "Traceback" not in reply.text
    assert any(found.group(1) in r.getMessage() and r.exc_info for r in caplog.records)
    assert audit.rows == [("status", "error", found.group(1))]


async def test_a_failing_audit_still_answers(
    fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    router = Router(Services(fleet, Broken()), Audit(fail=True))
    reply = await router.handle(Invocation(user_id="U1", text="nope"))
    assert "`nope` is not a /failover command" in reply.text
    assert any("audit write failed" in r.getMessage() for r in caplog.records)


def test_normalize_forgives_slack_typography() -> None:
    assert normalize("drain eu-west \u2014for 2h") == "drain eu-west --for 2h"
    assert normalize("note 1 \u201cit\u2019s back\u201d") == 'note 1 "it\'s back"'
    assert normalize("status <#C123|ops> &lt;x&gt;") == "status ops <x>"
    assert tokenize("note 1 \u201cit is back\u201d") == ["note", "1", "it is back"]
