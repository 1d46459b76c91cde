"""The transition table of an operation's states: the paths people and drivers take are legal,
everything else raises, and every operation that starts can end."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest

from bot.operations.state import (
    FINISHED,
    OUTCOMES,
    TRANSITIONS,
    IllegalTransition,
    OpKind,
    OpState,
    check,
    move,
)

S = OpState

DRAIN_PATHS = [
    # confirmed, applied, expired or restored, rejoined
    [S.AWAITING_CONFIRMATION, S.APPLYING, S.ACTIVE, S.RESTORING, S.REJOINING, S.RESTORED],
    # the fallback pool: an approver first
    [S.AWAITING_CONFIRMATION, S.AWAITING_APPROVAL, S.APPLYING, S.ACTIVE, S.RESTORING],
    # a restore asked while the disable call is in flight
    [S.AWAITING_CONFIRMATION, S.APPLYING, S.RESTORING, S.REJOINING, S.RESTORED],
    [S.AWAITING_CONFIRMATION, S.CANCELLED],
    [S.AWAITING_CONFIRMATION, S.AWAITING_APPROVAL, S.CANCELLED],
]
DRILL_STEPS = [
    S.STARTING, S.SAVING, S.DISABLING, S.MEASURING_RTO, S.HOLDING, S.RESTORING,
    S.MEASURING_REJOIN,
]  # fmt: skip
DRILL_PATHS = [
    [S.AWAITING_CONFIRMATION, *DRILL_STEPS, S.SUCCEEDED],
    [S.AWAITING_CONFIRMATION, *DRILL_STEPS, S.FAILED],
    [S.AWAITING_CONFIRMATION, S.SCHEDULED, S.STARTING, S.BLOCKED],
    [S.AWAITING_CONFIRMATION, S.AWAITING_APPROVAL, S.SCHEDULED, S.CANCELLED],
    # stopped before the hold ends: the restore, then the rejoin, then the outcome
    [S.AWAITING_CONFIRMATION, S.STARTING, S.SAVING, S.DISABLING, S.RESTORING],
    [S.MEASURING_RTO, S.RESTORING, S.MEASURING_REJOIN, S.ABORTED],
    # a recovery after a restart ends it wherever it was
    [S.HOLDING, S.INTERRUPTED],
    [S.SAVING, S.INTERRUPTED],
]


@dataclass
class Row:
    id: int
    kind: str
    state: str


@pytest.mark.parametrize(
    ("kind", "path"),
    [(OpKind.DRAIN, p) for p in DRAIN_PATHS] + [(OpKind.DRILL, p) for p in DRILL_PATHS],
)
def test_the_paths_taken_are_legal(kind: OpKind, path: list[OpState]) -> None:
    op = Row(1, kind, path[0])
    for state in path[1:]:
        move(op, state)
        assert op.state == state


@pytest.mark.parametrize(
    ("kind", "old", "new"),
    [
        (OpKind.DRAIN, S.AWAITING_CONFIRMATION, S.ACTIVE),  # applied without the driver's call
        (OpKind.DRAIN, S.ACTIVE, S.APPLYING),
        (OpKind.DRAIN, S.ACTIVE, S.CANCELLED),  # an applied drain is restored, not cancelled
        (OpKind.DRAIN, S.RESTORING, S.ACTIVE),
        (OpKind.DRAIN, S.RESTORING, S.RESTORING),
        (OpKind.DRAIN, S.APPLYING, S.SAVING),  # a drill's step
        (OpKind.DRILL, S.AWAITING_CONFIRMATION, S.APPLYING),  # a drain's step
        (OpKind.DRILL, S.STARTING, S.DISABLING),  # the configuration is saved first
        (OpKind.DRILL, S.SAVING, S.HOLDING),  # no step is skipped
        (OpKind.DRILL, S.HOLDING, S.MEASURING_REJOIN),  # not without the restore
        (OpKind.DRILL, S.RESTORING, S.RESTORING),
        (OpKind.DRILL, S.MEASURING_REJOIN, S.RESTORING),
        (OpKind.DRILL, S.STARTING, S.CANCELLED),  # a running drill is stopped, not cancelled
        (OpKind.DRILL, S.SUCCEEDED, S.FAILED),
    ],
)
def test_illegal_transitions_raise_and_leave_the_state(
    kind: OpKind, old: OpState, new: OpState
) -> None:
    op = Row(1, kind, old)
    with pytest.raises(IllegalTransition, match=f"a {kind} cannot go from {old} to {new}"):
        move(op, new)
    assert op.state == old


@pytest.mark.parametrize("kind", list(OpKind))
def test_nothing_leaves_a_finished_operation(kind: OpKind) -> None:
    for old, new in itertools.product(FINISHED, OpState):
        with pytest.raises(IllegalTransition):
            check(kind, old, new)


@pytest.mark.parametrize("kind", list(OpKind))
def test_every_state_can_reach_an_end(kind: OpKind) -> None:
    table = TRANSITIONS[kind]
    reachable = {S.AWAITING_CONFIRMATION}
    frontier = [S.AWAITING_CONFIRMATION]
    while frontier:
        for new in table.get(frontier.pop(), frozenset()):
            if new not in reachable:
                reachable.add(new)
                frontier.append(new)
    for state in reachable - FINISHED:
        ends: set[OpState] = set()
        seen, todo = {state}, [state]
        while todo:
            for new in table.get(todo.pop(), frozenset()):
                if new in FINISHED:
                    ends.add(new)
                elif new not in seen:
                    seen.add(new)
                    todo.append(new)
        assert ends, f"a {kind} in {state} can never finish"


def test_a_drill_can_end_with_any_outcome_from_any_step_but_a_drain_with_none() -> None:
    for step in DRILL_STEPS[1:]:
        for outcome in OUTCOMES:
            check(OpKind.DRILL, step, outcome)
    for state, outcome in itertools.product(OpState, OUTCOMES):
        with pytest.raises(IllegalTransition):
            check(OpKind.DRAIN, state, outcome)
