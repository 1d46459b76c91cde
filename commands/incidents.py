"""``/failover incidents``, ``timeline <id> [markdown]``, ``note <id> <text>``."""

from bot.errors import UsageError
from bot.records import IncidentRecords
from bot.views.reply import Reply
from bot.views.timeline import incidents_reply, markdown_reply, noted_reply, timeline_reply
from commands.base import Command, Context
from commands.parsing import record_id

TIMELINE_USAGE = "timeline <id> [markdown]"
NOTE_USAGE = "note <id> <text>"


def records(ctx: Context) -> IncidentRecords:
    if ctx.services.records is None:
        raise UsageError("Incidents need the database, which is not set up here.")
    return ctx.services.records


def incident_id(word: str, usage: str) -> int:
    number = record_id(word)
    if number is None:
        raise UsageError(
            f"`{word[:40]}` is not an incident id (a number, as `/failover incidents` lists them).",
            usage,
        )
    return number


def no_such(word: str, usage: str) -> UsageError:
    return UsageError(f"There is no incident {word}. `/failover incidents` lists them.", usage)


async def list_incidents(args: list[str], ctx: Context) -> Reply:
    if args:
        raise UsageError(f"`incidents` takes no arguments (got `{' '.join(args)}`).", "incidents")
    return incidents_reply(await records(ctx).recent())


async def timeline(args: list[str], ctx: Context) -> Reply:
    if not args or len(args) > 2 or (len(args) == 2 and args[1].lower() != "markdown"):
        raise UsageError("Name one incident, and optionally `markdown`.", TIMELINE_USAGE)
    view = await records(ctx).get(incident_id(args[0], TIMELINE_USAGE))
    if view is None:
        raise no_such(args[0], TIMELINE_USAGE)
    return markdown_reply(view) if len(args) == 2 else timeline_reply(view)


async def note(args: list[str], ctx: Context) -> Reply:
    if len(args) < 2:
        raise UsageError("Say which incident and what to note.", NOTE_USAGE)
    number = incident_id(args[0], NOTE_USAGE)
    text = " ".join(args[1:])[:2000]
    who = ctx.invocation.user_id or ctx.invocation.user_name  # the thread mentions it
    if not await records(ctx).note(number, who, text):
        raise no_such(args[0], NOTE_USAGE)
    return noted_reply(number, text)


INCIDENTS = Command(
    "incidents", "incidents", "Open and recent incidents with their figures.", list_incidents
)
TIMELINE = Command(
    "timeline",
    TIMELINE_USAGE,
    "One incident's timeline with time to detect, RTO and time to recover; `markdown` gives a "
    "postmortem draft.",
    timeline,
)
NOTE = Command("note", NOTE_USAGE, "Add a note to an incident's timeline and its thread.", note)
