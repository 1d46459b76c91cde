"""The fleet's topology and policies, read from ``failover.toml`` and validated as a whole.

Every mistake in the file becomes one ConfigError line that names the file and the key, so a
bad deploy stops at start with something an operator can fix, not a traceback.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic.dataclasses import dataclass as pydantic_dataclass

from bot.durations import parse_duration
from bot.errors import ConfigError
from bot.lbmodel import PoolInfo

# Cloudflare's 13 geo regions, in the order its dashboard lists them.
GEO_REGIONS: tuple[str, ...] = (
    "WNAM", "ENAM", "NSAM", "SSAM", "WEU", "EEU", "ME", "NAF", "SAF", "OC", "SAS", "SEAS", "NEAS",
)  # fmt: skip

_CODES = re.compile(r"^([1-5]xx|[1-5]\d\d)(,\s*([1-5]xx|[1-5]\d\d))*$")


def _duration(value: object) -> object:
    if isinstance(value, str):
        return parse_duration(value)
    return value


def _http_url(value: object) -> object:
    if isinstance(value, str):
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r} is not an http(s) URL (e.g. https://gw.example.com)")
        return value.rstrip("/")
    return value


Seconds = Annotated[float, BeforeValidator(_duration), Field(gt=0)]
HttpUrl = Annotated[str, BeforeValidator(_http_url)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# One Region and one Origin per pool and origin: slotted pydantic dataclasses, validated as the
# models are, at a fifth of a model's memory (no dict of fields, no set of those given), some
# 1.3 MB at 1,000 pools (bench/monitor.py).
_PER_POOL = ConfigDict(extra="forbid")


@pydantic_dataclass(frozen=True, slots=True, kw_only=True, config=_PER_POOL)
class Origin:
    name: str = Field(min_length=1)
    url: HttpUrl
    weight: float = Field(default=1.0, ge=0, le=1)
    enabled: bool = True


@pydantic_dataclass(frozen=True, slots=True, kw_only=True, config=_PER_POOL)
class Region:
    name: str
    role: str = "secondary"
    pool: str = Field(min_length=1)
    minimum_origins: int = Field(default=1, ge=1)
    origins: list[Origin] = Field(min_length=1)

    @model_validator(mode="after")
    def _enough_origins(self) -> Region:
        if self.minimum_origins > len(self.origins):
            raise ValueError(
                f"minimum_origins is {self.minimum_origins} but the pool has only "
                f"{len(self.origins)} origin(s)"
            )
        return self


class MonitorSettings(_Model):
    method: str = "GET"
    path: str = "/health"
    timeout: Seconds = 5.0
    retries: int = Field(default=2, ge=0, le=5)
    interval: Seconds = 30.0
    expected_codes: str = "200"
    expected_body: str = '"status":"healthy"'
    consecutive_down: int = Field(default=2, ge=1)
    consecutive_up: int = Field(default=2, ge=1)
    headers: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _codes(self) -> MonitorSettings:
        if not _CODES.match(self.expected_codes):
            raise ValueError(
                f"expected_codes: {self.expected_codes!r} is not a status code list "
                '(e.g. "200", "2xx", "200,204")'
            )
        if not self.path.startswith("/"):
            raise ValueError(f"path: {self.path!r} must start with /")
        return self

    def code_expected(self, code: int) -> bool:
        for item in self.expected_codes.split(","):
            item = item.strip()
            if item.endswith("xx") and str(code)[0] == item[0]:
                return True
            if item == str(code):
                return True
        return False


class Targets(_Model):
    rto: Seconds = 30.0
    rejoin: Seconds = 60.0


class LoadBalancerSettings(_Model):
    name: str = "foundation-gateway-lb"
    hostname: str = "api.erlvinc.com"
    steering_policy: str = "geo"
    session_affinity: str = "ip_cookie"
    default_pools: list[str] = Field(min_length=1)
    fallback_pool: str
    region_pools: dict[str, list[str]] = Field(default_factory=dict)
    # Cloudflare applies a change at the edge after a short delay it gives no figure for.
    propagation: Seconds = 5.0


class StatusSettings(_Model):
    deadline: Seconds = 2.5


class WatchSettings(_Model):
    """The background watch: probing, Cloudflare reads, alerting and incident policy."""

    probe_interval: Seconds = 10.0  # the bot's own probes of every origin
    cloudflare_poll: Seconds = 15.0  # Cloudflare allows about 1,200 API calls per 5 minutes
    # How long one read of the pools is shared by the watch, status, check and the drivers
    # (never longer than load_balancer.propagation: the view is never behind the edge).
    cloudflare_cache: Seconds = 2.0
    rto_alert: Seconds = (
        60.0  # RTO Exceeded: this long without healthy traffic for a pool's regions
    )
    settle: Seconds = 120.0  # an incident closes once every pool it touched is healthy this long
    reminder: Seconds = 1800.0  # an open incident is re-announced this often
    flap_window: Seconds = 60.0  # at most one thread reply per pool in this window
    lease_ttl: Seconds = 15.0
    probe_concurrency: int = Field(default=64, ge=1, le=1024)


class AccessSettings(_Model):
    """Who may do what: everyone reads; operators drain and drill; approvers approve."""

    operators: list[str] = Field(default_factory=list)  # Slack user ids (U…) or user groups (S…)
    approvers: list[str] = Field(default_factory=list)


class OperationSettings(_Model):
    settle: Seconds = 60.0  # no second change to a pool within this, and none while one settles
    drain_default: Seconds = 7200.0
    drain_max: Seconds = 86400.0
    rejoin_timeout: Seconds = 120.0  # how long a restore is watched for its regions' return
    drill_hold: Seconds = 30.0  # how long a drill holds the failover while safeguards watch
    drill_sample: Seconds = 0.25  # how often users' view is sampled while measuring


DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


def _hhmm(value: str, key: str) -> str:
    if not _HHMM.match(value):
        raise ValueError(f"{key}: {value!r} is not a UTC time HH:MM")
    return value


class GameDay(_Model):
    """A weekly drill: region, weekday and UTC time."""

    region: str
    day: str
    time: str

    @model_validator(mode="after")
    def _valid(self) -> GameDay:
        if self.day.lower() not in DAYS:
            raise ValueError(f"day: {self.day!r} is not one of {', '.join(DAYS)}")
        _hhmm(self.time, "time")
        return self


class BlockedWindow(_Model):
    """When no drill may run (UTC): some weekdays, a time range, or one date."""

    days: list[str] = Field(default_factory=list)
    start: str | None = None  # HH:MM; a range past midnight wraps
    end: str | None = None
    date: str | None = None  # YYYY-MM-DD
    reason: str = "blocked window"

    @model_validator(mode="after")
    def _valid(self) -> BlockedWindow:
        for day in self.days:
            if day.lower() not in DAYS:
                raise ValueError(f"days: {day!r} is not one of {', '.join(DAYS)}")
        if (self.start is None) != (self.end is None):
            raise ValueError("start and end go together")
        if self.start is not None and self.end is not None:
            _hhmm(self.start, "start")
            _hhmm(self.end, "end")
        if self.date is not None and not re.match(r"^\d{4}-\d{2}-\d{2}$", self.date):
            raise ValueError(f"date: {self.date!r} is not YYYY-MM-DD")
        return self


class GameDaySettings(_Model):
    weekly: list[GameDay] = Field(default_factory=list)
    blocked: list[BlockedWindow] = Field(default_factory=list)
    notice: Seconds = 3600.0  # the channel is told this long before a scheduled drill


class ServedBy(_Model):
    """How to tell which region served a request: a response header or a JSON field."""

    header: str | None = None
    json_field: str | None = None
    values: dict[str, str] = Field(default_factory=dict)  # what it says -> region; same if empty

    @model_validator(mode="after")
    def _one_source(self) -> ServedBy:
        if (self.header is None) == (self.json_field is None):
            raise ValueError("set exactly one of header or json_field")
        return self


class PublicSettings(_Model):
    """The public hostname as users reach it, and how to read which pool answered."""

    url: HttpUrl
    served_by: ServedBy | None = None
    location: str = "the bot's location"
    geo_header: str | None = None  # sandbox only: the header that names the caller's geo region


class Relay(_Model):
    geo: str
    url: HttpUrl


class Fleet(_Model):
    """The whole topology: regions (each one pool of origins), monitor, steering and targets."""

    regions: dict[str, Region] = Field(min_length=1)
    monitor: MonitorSettings = MonitorSettings()
    targets: Targets = Targets()
    load_balancer: LoadBalancerSettings
    status: StatusSettings = StatusSettings()
    watch: WatchSettings = WatchSettings()
    access: AccessSettings = AccessSettings()
    operations: OperationSettings = OperationSettings()
    gamedays: GameDaySettings = GameDaySettings()
    public: PublicSettings | None = None
    relays: list[Relay] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _name_regions(cls, data: Any) -> Any:
        # A region's name is its table key; copy it in so a Region stands on its own.
        if isinstance(data, dict) and isinstance(data.get("regions"), dict):
            data = dict(data)
            data["regions"] = {
                name: {**body, "name": name} if isinstance(body, dict) else body
                for name, body in data["regions"].items()
            }
        return data

    @model_validator(mode="after")
    def _references(self) -> Fleet:
        known = ", ".join(self.regions)
        pools: dict[str, str] = {}
        origins: dict[str, str] = {}
        for region in self.regions.values():
            if region.pool in pools:
                raise ValueError(
                    f"regions.{region.name}.pool: duplicate pool name {region.pool!r} "
                    f"(also region {pools[region.pool]})"
                )
            pools[region.pool] = region.name
            for i, origin in enumerate(region.origins):
                if origin.name in origins:
                    raise ValueError(
                        f"regions.{region.name}.origins[{i}].name: duplicate origin name "
                        f"{origin.name!r} (also in region {origins[origin.name]})"
                    )
                origins[origin.name] = region.name
        lb = self.load_balancer

        def check(key: str, name: str) -> None:
            if name not in self.regions:
                raise ValueError(f"{key}: unknown region {name!r} (known: {known})")

        for i, name in enumerate(lb.default_pools):
            check(f"load_balancer.default_pools[{i}]", name)
        check("load_balancer.fallback_pool", lb.fallback_pool)
        for geo, names in lb.region_pools.items():
            if geo not in GEO_REGIONS:
                raise ValueError(
                    f"load_balancer.region_pools.{geo}: unknown geo region "
                    f"(Cloudflare's are {', '.join(GEO_REGIONS)})"
                )
            for i, name in enumerate(names):
                check(f"load_balancer.region_pools.{geo}[{i}]", name)
        if self.public is not None and self.public.served_by is not None:
            for said, name in self.public.served_by.values.items():
                check(f"public.served_by.values.{said}", name)
        for i, day in enumerate(self.gamedays.weekly):
            check(f"gamedays.weekly[{i}].region", day.region)
            if day.region == lb.fallback_pool:
                raise ValueError(
                    f"gamedays.weekly[{i}].region: {day.region} is the fallback pool; drilling it "
                    "needs an approver each time, so it cannot be on a schedule"
                )
        for i, relay in enumerate(self.relays):
            if relay.geo not in GEO_REGIONS:
                raise ValueError(
                    f"relays[{i}].geo: unknown geo region {relay.geo!r} "
                    f"(Cloudflare's are {', '.join(GEO_REGIONS)})"
                )
        return self

    def region_of_pool(self, pool_name: str) -> str | None:
        return next((r.name for r in self.regions.values() if r.pool == pool_name), None)

    def region_names(self, pools: Iterable[PoolInfo]) -> dict[str, str]:
        """Pool id -> the region it is in failover.toml, or the pool's own name when it is not."""
        return {p.id: self.region_of_pool(p.name) or p.name for p in pools}

    def region(self, name: str) -> Region:
        return self.regions[name]

    @property
    def origins(self) -> list[tuple[str, Origin]]:
        """Every origin with its region's name."""
        return [(r.name, o) for r in self.regions.values() for o in r.origins]


def _key(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def parse_fleet(data: dict[str, Any], source: str = "failover.toml") -> Fleet:
    """Validate a parsed topology; the first problem becomes one ConfigError line."""
    try:
        return Fleet.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = _key(tuple(err["loc"]))
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = "is missing"
        elif err["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            msg = "is not a known key (check its spelling)"
        raise ConfigError(f"{source}: {key}: {msg}" if key else f"{source}: {msg}") from None


def load_fleet(path: str | Path) -> Fleet:
    """Read and validate ``path``; a missing file or bad TOML is one ConfigError line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: file not found (set FAILOVER_CONFIG to the topology file)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_fleet(data, str(path))
