"""The one ``/failover`` entry point: words -> subcommand -> reply, every outcome audited.

It never raises: bad input becomes a usage answer, anything unexpected is logged with an id
that the user is shown.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence

from bot import metrics
from bot.errors import OperationRefused, ProviderError, UsageError
from bot.logs import request_id
from bot.ports import AuditTrail
from bot.views.errors import database_unavailable, internal_error, provider_error, usage_error
from bot.views.reply import Reply
from commands import check, drains, drills, help, incidents, silences, status, whatif
from commands.actions import run_action
from commands.base import Command, Context, Invocation, Services
from commands.parsing import tokenize

log = logging.getLogger(__name__)

COMMANDS: tuple[Command, ...] = (
    status.COMMAND,
    check.COMMAND,
    whatif.COMMAND,
    incidents.INCIDENTS,
    incidents.TIMELINE,
    incidents.NOTE,
    silences.SILENCE,
    silences.SILENCES,
    silences.UNSILENCE,
    drains.DRAIN,
    drains.RESTORE,
    drains.DRAINS,
    drills.DRILL,
    drills.DRILLS,
    help.COMMAND,
)


def new_error_id() -> str:
    return secrets.token_hex(4)


# Why an error means the database is unavailable, or None (bot.db.engine.database_error; the
# commands import no database, so the runtime hands it in).
DatabaseError = Callable[[BaseException], str | None]


class Router:
    def __init__(
        self,
        services: Services,
        audit: AuditTrail,
        commands: Sequence[Command] = COMMANDS,
        database_error: DatabaseError | None = None,
    ) -> None:
        self.services = services
        self.audit = audit
        self.commands = {c.name: c for c in commands}
        self.database_error = database_error or (lambda exc: None)

    def _unknown(self, word: str) -> Reply:
        word = word if len(word) <= 40 else word[:39] + "…"
        names = ", ".join(f"`{n}`" for n in self.commands)
        return usage_error(
            f"`{word}` is not a /failover command. Commands: {names}.", "/failover help"
        )

    async def _dispatch(self, ctx: Context, words: list[str]) -> Reply:
        if not words:
            return await self.commands["help"].run([], ctx)
        command = self.commands.get(words[0].lower())
        if command is None:
            return self._unknown(words[0])
        try:
            return await command.run(words[1:], ctx)
        except UsageError as exc:
            return usage_error(str(exc), exc.usage and f"/failover {exc.usage}")

    async def handle_action(self, invocation: Invocation, action_id: str, value: str) -> Reply:
        """A button click, answered and audited like a command."""

        async def dispatch(ctx: Context) -> Reply:
            try:
                return await run_action(action_id, value, ctx)
            except UsageError as exc:
                return usage_error(str(exc), exc.usage)

        return await self._answer(invocation, dispatch)

    async def handle(self, invocation: Invocation) -> Reply:
        async def dispatch(ctx: Context) -> Reply:
            return await self._dispatch(ctx, tokenize(invocation.text))

        return await self._answer(invocation, dispatch)

    async def _answer(
        self, invocation: Invocation, dispatch: Callable[[Context], Awaitable[Reply]]
    ) -> Reply:
        started = time.perf_counter()
        error_id: str | None = None
        rid = new_error_id()
        request_id.set(rid)  # every line logged for this request carries it
        ctx = Context(invocation, self.services, tuple(self.commands.values()))
        try:
            reply = await dispatch(ctx)
        except UsageError as exc:
            reply = usage_error(str(exc), "/failover help")
        except OperationRefused as exc:
            reply = usage_error(str(exc))
        except ProviderError as exc:
            reply = provider_error(str(exc))
        except Exception as exc:
            error_id = rid  # the id the user is shown is the one on every log line of the request
            if (reason := self.database_error(exc)) is not None:
                # Not a bug: one line, no traceback, however many commands meet it.
                log.error(
                    "command failed: the database is unavailable (%s) [error_id=%s] text=%r",
                    reason,
                    error_id,
                    invocation.text,
                )
                reply = database_unavailable(reason, error_id)
            else:
                log.exception("command failed [error_id=%s] text=%r", error_id, invocation.text)
                reply = internal_error(error_id)
        metrics.SLACK_REPLIES.labels(reply.outcome).inc()
        try:
            await self.audit.record_command(
                invocation, reply.outcome, reply.text[:500], error_id, time.perf_counter() - started
            )
        except Exception as exc:
            if (reason := self.database_error(exc)) is not None:
                log.error("audit write failed: the database is unavailable (%s)", reason)
            else:
                log.exception("audit write failed [error_id=%s] text=%r", rid, invocation.text)
        return reply
