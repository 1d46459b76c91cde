"""How long Cloudflare needs to notice a change of health (pure).

Cloudflare's monitors page (developers.cloudflare.com/load-balancing/monitors): a check runs
every ``interval``; ``consecutive_down`` / ``consecutive_up`` checks in a row change an endpoint's
health (0 means 1); ``retries`` are made at once, only after a timeout of ``timeout`` s, so a check
of an origin that times out takes (1 + retries) × timeout. Then the
edge applies the change after a propagation delay for which Cloudflare gives no figure (the plan's
``load_balancer.propagation``).
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.durations import format_duration
from bot.lbmodel import MonitorInfo


@dataclass(frozen=True)
class Detection:
    interval: float
    consecutive_down: int
    consecutive_up: int
    retries: int
    timeout: float
    propagation: float

    @classmethod
    def of(cls, monitor: MonitorInfo, propagation: float) -> Detection:
        return cls(
            interval=monitor.interval,
            consecutive_down=max(1, monitor.consecutive_down),
            consecutive_up=max(1, monitor.consecutive_up),
            retries=monitor.retries,
            timeout=monitor.timeout,
            propagation=propagation,
        )

    def down(self, timeouts: bool = False) -> float:
        """Seconds from a fault until the edge steers around it, at worst."""
        waited = (1 + self.retries) * self.timeout if timeouts else 0.0
        return self.interval * self.consecutive_down + waited + self.propagation

    def up(self) -> float:
        """Seconds from a recovery until the edge sends traffic back, at worst."""
        return self.interval * self.consecutive_up + self.propagation

    def explain_down(self) -> str:
        checks = "check" if self.consecutive_down == 1 else "checks"
        text = (
            f"monitor every {_s(self.interval)} × {self.consecutive_down} {checks} "
            f"+ propagation {_s(self.propagation)} = about {_s(self.down())}"
        )
        return text + (
            f" ({_s(self.down(timeouts=True))} when origins time out: each check then waits "
            f"{_s(self.timeout)} and retries {self.retries} times)"
        )


def _s(seconds: float) -> str:
    """Seconds as people write them: 5 s, 0.5 s, 1m05s."""
    if seconds < 60 and float(seconds).is_integer():
        return f"{seconds:.0f} s"
    return format_duration(seconds)
