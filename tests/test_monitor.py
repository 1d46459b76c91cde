from __future__ import annotations

from datetime import UTC, datetime

from bot.monitor import PoolState, pool_state
from bot.observations import Outcome, ProbeResult


def result(outcome: Outcome) -> ProbeResult:
    return ProbeResult("r", "o", "http://o", outcome, str(outcome), datetime.now(UTC))


H, D, N = Outcome.HEALTHY, Outcome.REFUSED, Outcome.NO_ANSWER


def test_pool_states() -> None:
    assert pool_state([result(H), result(H)]) is PoolState.HEALTHY
    assert pool_state([result(H), result(D)]) is PoolState.DEGRADED
    assert pool_state([result(D), result(D)]) is PoolState.DOWN
    assert pool_state([result(D), result(N)]) is PoolState.DEGRADED
    assert pool_state([result(H), result(N)]) is PoolState.UNKNOWN
    assert pool_state([result(N)]) is PoolState.UNKNOWN
    assert pool_state([]) is PoolState.UNKNOWN
