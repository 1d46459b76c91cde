"""An operation's kind, its states, the named groups of states and the legal transitions (pure).

Every change of an operation's state goes through ``move`` (or ``check`` for a compare-and-set
UPDATE), so an illegal transition raises instead of leaving a drain or a drill half-way.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol


class OpKind(StrEnum):
    DRAIN = "drain"
    DRILL = "drill"


class OpState(StrEnum):
    AWAITING_CONFIRMATION = "awaiting_confirmation"
    AWAITING_APPROVAL = "awaiting_approval"
    SCHEDULED = "scheduled"  # a drill with a time: starts by itself
    # A drain: the driver disables, the pool stays out until it expires or is restored.
    APPLYING = "applying"  # confirmed; the driver disables it next
    ACTIVE = "active"  # disabled until its expiry
    RESTORING = "restoring"  # being re-enabled (a drain, or a drill's restore)
    REJOINING = "rejoining"  # re-enabled; watching for its geo regions to come back
    RESTORED = "restored"
    # A drill: preflight, then named steps in order.
    STARTING = "starting"  # confirmed or due; preflight next
    SAVING = "saving"
    DISABLING = "disabling"
    MEASURING_RTO = "measuring_rto"
    HOLDING = "holding"
    MEASURING_REJOIN = "measuring_rejoin"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # a target was missed
    ABORTED = "aborted"  # a safeguard fired, it was cancelled, or an error
    INTERRUPTED = "interrupted"  # a real incident began, or the bot restarted
    BLOCKED = "blocked"  # preflight refused
    CANCELLED = "cancelled"


class Cancelled(StrEnum):
    """What a cancel did (the workflow's outcome; the view says it)."""

    CANCELLED = "cancelled"  # it had not changed anything
    STOPPING = "stopping"  # a running drill: it restores the pool and reports
    NOT_PENDING = "not pending"  # applied already (a drain is restored instead), or finished
    NOTHING = "nothing"  # no such operation


class Restore(StrEnum):
    """What a restore asked of a drained region did."""

    NOT_DRAINED = "not drained"
    CANCELLED = "cancelled"  # it was still pending: nothing had changed
    ALREADY = "already"  # being restored already
    RESTORING = "restoring"


S = OpState
PENDING = frozenset({S.AWAITING_CONFIRMATION, S.AWAITING_APPROVAL})
# A drill's steps from preflight to the end of the rejoin: its task runs them.
DRILL_RUNNING = frozenset(
    {S.STARTING, S.SAVING, S.DISABLING, S.MEASURING_RTO, S.HOLDING, S.RESTORING, S.MEASURING_REJOIN}
)
OUTCOMES = frozenset({S.SUCCEEDED, S.FAILED, S.ABORTED, S.INTERRUPTED, S.BLOCKED})
FINISHED = OUTCOMES | {S.RESTORED, S.CANCELLED}
# A drain holding the load balancer changed, or changing it.
DRAIN_CHANGING = frozenset({S.APPLYING, S.RESTORING})
DRAIN_OPEN = PENDING | DRAIN_CHANGING | {S.ACTIVE, S.REJOINING}
# States in which the load balancer may be moving traffic on purpose: the watch keeps those moves
# out of incidents.
MOVING = (DRAIN_OPEN - PENDING) | (DRILL_RUNNING - {S.STARTING})
# States that count for the safety rules (in flight), beside anything finished within settle.
IN_FLIGHT = (DRAIN_OPEN - PENDING) | DRILL_RUNNING
# Not finished: listed on the dashboard.
OPEN = frozenset(OpState) - FINISHED

_DRAIN: dict[OpState, frozenset[OpState]] = {
    S.AWAITING_CONFIRMATION: frozenset({S.AWAITING_APPROVAL, S.APPLYING, S.CANCELLED}),
    S.AWAITING_APPROVAL: frozenset({S.APPLYING, S.CANCELLED}),
    # A restore asked while the disable call is in flight wins: straight to restoring.
    S.APPLYING: frozenset({S.ACTIVE, S.RESTORING}),
    S.ACTIVE: frozenset({S.RESTORING}),
    S.RESTORING: frozenset({S.REJOINING}),
    S.REJOINING: frozenset({S.RESTORED}),
}
_STEPS = (S.SAVING, S.DISABLING, S.MEASURING_RTO, S.HOLDING, S.RESTORING, S.MEASURING_REJOIN)
_DRILL: dict[OpState, frozenset[OpState]] = {
    S.AWAITING_CONFIRMATION: frozenset({S.AWAITING_APPROVAL, S.STARTING, S.SCHEDULED, S.CANCELLED}),
    S.AWAITING_APPROVAL: frozenset({S.STARTING, S.SCHEDULED, S.CANCELLED}),
    S.SCHEDULED: frozenset({S.STARTING, S.CANCELLED}),
    S.STARTING: frozenset({S.SAVING, S.BLOCKED}),
    # Each step goes on to the next; any step before the restore may stop and restore; any step
    # may end with an outcome (a recovery after a restart ends it wherever it was).
    **{
        step: frozenset({*(_STEPS[i + 1 : i + 2]), *([S.RESTORING] if i < 4 else []), *OUTCOMES})
        for i, step in enumerate(_STEPS)
    },
}
TRANSITIONS = {OpKind.DRAIN: _DRAIN, OpKind.DRILL: _DRILL}


class IllegalTransition(Exception):
    """An operation was asked to go where its state machine does not lead."""


class HasState(Protocol):
    id: int
    kind: str
    state: str


def check(kind: str, old: str, new: str) -> OpState:
    """``new`` as an OpState, when ``kind`` may go from ``old`` to it; raises otherwise."""
    allowed = TRANSITIONS[OpKind(kind)].get(OpState(old), frozenset())
    if OpState(new) not in allowed:
        raise IllegalTransition(f"a {kind} cannot go from {old} to {new}")
    return OpState(new)


def move(op: HasState, new: OpState) -> None:
    """Change ``op``'s state, through the transition table."""
    op.state = check(op.kind, op.state, new)
