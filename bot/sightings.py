"""Who saw a change of Cloudflare's health first: the API read, the notification, health events.

Cloudflare shows the bot one change of a pool's (or an origin's) health up to three times: the
watch's next read of its API (every ``cloudflare_poll``), its notification to the webhook (within
seconds, https://developers.cloudflare.com/notifications/get-started/configure-webhooks/), and its
health events (read after each API read). The monitor's ``sightings`` keep, per pool and origin,
the last change and when each source showed it, so that the change is applied once, its timeline
says which source was first and by how much, and a late notification never undoes what a newer
read already showed. Times compared are when the bot learnt of the change (a read's time, a
notification's arrival), since that is what a faster source gains; the change's own time is the
earliest one a source gives (Cloudflare's ``ts`` for a notification).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bot.monitor import MonitorState, Sighting

READ = "API read"
NOTIFICATION = "notification"
EVENTS = "health events"
# A health event and a notification of the same pool, health and about the same time are one
# change (Cloudflare stamps each on its own; a flapping pool repeats the health minutes apart).
SAME_CHANGE = 60.0
# How far the bot's clock may be from Cloudflare's: a change known from an API read (the bot's
# clock) is newer than a notification (Cloudflare's ``ts``, whole seconds) only beyond this, so a
# bot clock a few seconds ahead never drops a fresh notification. Within it, whether a read came
# after the notification is decided on the bot's clock alone (the read's time against the
# notification's arrival).
CLOCK_SKEW = 5.0

# An origin healthy again this long is forgotten: Cloudflare's notification of it came long ago.
FORGET = 3600.0

WHO = {READ: "the API read", NOTIFICATION: "the notification", EVENTS: "Cloudflare's health events"}


def key(pool: str, origin: str | None = None) -> str:
    return pool if origin is None else f"{pool}/{origin}"


def health_word(healthy: bool) -> str:
    return "healthy" if healthy else "unhealthy"


def _gap(later: datetime, earlier: datetime) -> float:
    return max(0.0, (later - earlier).total_seconds())


@dataclass(frozen=True)
class Verdict:
    """What a notification is, against what the bot already knows."""

    apply: bool  # a change the bot did not know: apply it
    result: str  # for the stored notification's ``result``
    sighting: Sighting | None  # the change it belongs to (None: stale, not applied)
    suffix: str = ""  # for its timeline entry: who saw the change first


def notified(
    state: MonitorState,
    name: str,
    healthy: bool,
    changed_at: datetime,
    received_at: datetime,
    what: str,
) -> Verdict:
    """A notification that ``name`` (a key) became ``healthy`` at ``changed_at`` (Cloudflare's
    ``ts``), received at ``received_at``; ``what`` names it for the result ("pool eu-west")."""
    known = state.sightings.get(name)
    if known is not None and known.healthy == healthy:
        if NOTIFICATION in known.seen:  # delivered again, or a second policy: nothing new
            gap = _gap(received_at, known.seen[NOTIFICATION])
            return Verdict(False, f"duplicate of the notification {gap:.1f} s earlier", known)
        known.seen[NOTIFICATION] = received_at
        known.at = min(known.at, changed_at)  # the earliest sign of it
        gap = _gap(received_at, known.seen.get(known.first, received_at))
        return Verdict(
            False,
            f"duplicate of {WHO[known.first]} {gap:.1f} s earlier",
            known,
            f"{WHO[known.first]} saw it {gap:.1f} s earlier",
        )
    if known is not None and _newer(known, changed_at, received_at):
        # What the bot knows is newer than this notification (a change after it, or a read
        # asked after it that showed otherwise): it must not undo it.
        read = f", API read at {known.last_read:%H:%M:%S}" if known.last_read else ""
        return Verdict(
            False,
            f"older than what is known: {what} {health_word(known.healthy)} since "
            f"{known.at:%H:%M:%S}{read}",
            None,
        )
    sighting = Sighting(
        healthy=healthy, at=changed_at, first=NOTIFICATION, seen={NOTIFICATION: received_at}
    )
    state.sightings[name] = sighting
    return Verdict(True, f"applied: {what} {health_word(healthy)}", sighting, "before any API read")


def _newer(known: Sighting, changed_at: datetime, received_at: datetime) -> bool:
    """Whether ``known`` (of the other health) is newer than a notification of ``changed_at``
    (Cloudflare's clock) received at ``received_at`` (the bot's)."""
    if known.last_read is not None and known.last_read >= received_at:
        return True  # a read asked after it arrived showed otherwise (both the bot's clock)
    if known.first == NOTIFICATION and known.at > changed_at:
        return True  # two of Cloudflare's times: ordered as they are
    # A read's time against Cloudflare's: newer only beyond what the clocks may differ by.
    read = (
        known.last_read
        if known.first == NOTIFICATION
        else max(known.at, known.last_read or known.at)
    )
    return read is not None and (read - changed_at).total_seconds() > CLOCK_SKEW


def read(state: MonitorState, name: str, healthy: bool, read_at: datetime) -> Sighting | None:
    """An API read asked at ``read_at`` shows ``name`` ``healthy``. Returns the change when this
    read is the first one to confirm what another source showed before (its timeline entry then
    says by how much the other source was earlier)."""
    known = state.sightings.get(name)
    if known is None or known.healthy != healthy:
        state.sightings[name] = Sighting(
            healthy=healthy, at=read_at, first=READ, seen={READ: read_at}, last_read=read_at
        )
        return None
    known.last_read = read_at
    if READ in known.seen:
        return None
    known.seen[READ] = read_at
    return known


def forgotten(known: Sighting | None, healthy: bool | None, read_at: datetime) -> bool:
    """Whether an origin's sighting can go: healthy again for FORGET, read healthy still (no
    notification of that change is still coming; a healthy origin needs none)."""
    return (
        known is not None
        and known.healthy
        and healthy is True
        and (read_at - known.at).total_seconds() > FORGET
    )


def stands_against(known: Sighting | None, healthy: bool | None, read_at: datetime) -> bool:
    """Whether a notified change stands against a read that shows otherwise: the read was asked
    before the notification arrived (a view shared from the cache, or a read in flight), so it
    cannot have seen the change yet."""
    return (
        known is not None
        and known.first == NOTIFICATION
        and READ not in known.seen
        and known.healthy != healthy
        and read_at <= known.seen[NOTIFICATION]
    )


def confirmed_text(known: Sighting) -> str:
    """The timeline text of a change a notification showed first, once a read confirms it."""
    gap = _gap(known.seen[READ], known.seen[known.first])
    return f"{known.head} (seen {gap:.1f} s before the next API read)"


def health_event(
    state: MonitorState, name: str, healthy: bool | None, at: datetime, now: datetime
) -> Sighting | None:
    """One of Cloudflare's health events (``at`` its time, learnt ``now``): the change it
    belongs to when the bot knows it already (then marked seen), else None."""
    known = state.sightings.get(name)
    if known is None or healthy is None or known.healthy != healthy:
        return None
    if abs((known.at - at).total_seconds()) > SAME_CHANGE:
        return None  # the same health again minutes later: another change (a flap)
    known.seen.setdefault(EVENTS, now)
    known.at = min(known.at, at)
    return known
