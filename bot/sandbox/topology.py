"""Which topology the sandbox and the demo mirror.

``--config`` when given; else ``FAILOVER_CONFIG``, as every other command reads it; else
``failover.toml`` where the command runs; else the seed's topology, a copy of the repository's
failover.toml packaged with the bot (``bot/data``), so that ``pip install`` then
``failover-bot demo`` works in any directory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from bot.errors import ConfigError

LOCAL = Path("failover.toml")


def packaged() -> Path:
    """The seed's failover.toml as installed with the bot (a file: setuptools installs package
    data as files, also from a wheel)."""
    return Path(str(files("bot").joinpath("data", "failover.toml")))


@dataclass(frozen=True)
class Topology:
    path: Path
    note: str | None = None  # said at start when it is not a file the operator named


def sandbox_topology(given: str | None, environ: Mapping[str, str], cwd: Path) -> Topology:
    """The topology file to mirror; a named file that is missing is one ConfigError line."""
    if given:
        if not (cwd / given).is_file():
            raise ConfigError(f"--config {given}: file not found")
        return Topology(Path(given))
    named = environ.get("FAILOVER_CONFIG")
    if named:
        if not (cwd / named).is_file():
            raise ConfigError(f"FAILOVER_CONFIG={named}: file not found")
        return Topology(Path(named))
    if (cwd / LOCAL).is_file():
        return Topology(LOCAL)
    seed = packaged()
    if not seed.is_file():
        raise ConfigError(
            "no failover.toml here and FAILOVER_CONFIG is not set: set it to the topology file"
        )
    return Topology(
        seed,
        "no failover.toml here and FAILOVER_CONFIG is not set: running on the seed's topology, "
        f"packaged with the bot ({seed})",
    )
