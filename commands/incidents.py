"""``/failover incidents``, ``timeline <id> [markdown]``, ``note <id> <text>``."""

from bot.errors import UsageError
from bot.incidents import recent_incidents
from bot.views.reply import Reply, section
from bot.views.timeline import incidents_reply, markdown_reply, timeline_reply
from commands.base import Command, Context
from commands.records import find, view_of

TIMELINE_USAGE = "timeline <id> [markdown]"
NOTE_USAGE = "note <id> <text>"


async def list_incidents(args: list[str], ctx: Context) -> Reply:
    if args:
        raise UsageError(f"`incidents` takes no arguments (got `{' '.join(args)}`).", "incidents")
    async with ctx.services.db()() as session:
        rows = await recent_incidents(session)
        return incidents_reply([await view_of(ctx, session, i) for i in rows])


async def timeline(args: list[str], ctx: Context) -> Reply:
    if not args or len(args) > 2 or (len(args) == 2 and args[1].lower() != "markdown"):
        raise UsageError("Name one incident, and optionally `markdown`.", TIMELINE_USAGE)
    async with ctx.services.db()() as session:
        view = await view_of(ctx, session, await find(ctx, session, args[0], TIMELINE_USAGE))
    return markdown_reply(view) if len(args) == 2 else timeline_reply(view)


async def note(args: list[str], ctx: Context) -> Reply:
    if len(args) < 2:
        raise UsageError("Say which incident and what to note.", NOTE_USAGE)
    incidents = ctx.services.incidents
    assert incidents is not None
    text = " ".join(args[1:])[:2000]
    who = ctx.invocation.user_name or ctx.invocation.user_id
    async with ctx.services.db().begin() as session:
        incident = await find(ctx, session, args[0], NOTE_USAGE)
        await incidents.note(session, incident, who, text, ctx.services.clock())
        number = incident.id
    return Reply(
        text=f"Noted on incident #{number}.",
        blocks=[section(f":memo: Noted on incident #{number}: {text}")],
    )


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
