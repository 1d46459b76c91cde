"""The topology file: the seed's fleet loads, and each mistake is one line naming file and key."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from bot.errors import ConfigError
from bot.fleet import GEO_REGIONS, Fleet, load_fleet, parse_fleet

from .conftest import CONFIG


def test_the_seed_fleet_loads(fleet: Fleet) -> None:
    assert list(fleet.regions) == ["us-east", "eu-west", "apac-sg"]
    assert fleet.region("us-east").pool == "foundation-us-east"
    assert fleet.load_balancer.fallback_pool == "us-east"
    assert fleet.load_balancer.default_pools == ["us-east", "eu-west", "apac-sg"]
    assert set(fleet.load_balancer.region_pools) == set(GEO_REGIONS)
    assert fleet.load_balancer.region_pools["WEU"] == ["eu-west", "us-east", "apac-sg"]
    m = fleet.monitor
    assert (m.path, m.timeout, m.retries, m.interval) == ("/health", 5.0, 2, 30.0)
    assert m.expected_body == '"status":"healthy"'
    assert (fleet.targets.rto, fleet.targets.rejoin) == (30.0, 60.0)
    assert fleet.status.deadline == 2.5


def _data() -> dict[str, Any]:
    return tomllib.loads(CONFIG.read_text())


def _error(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_fleet(data, "failover.toml")
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_unknown_region_in_the_geo_map() -> None:
    data = _data()
    data["load_balancer"]["region_pools"]["WEU"] = ["eu-wset"]
    assert _error(data) == (
        "failover.toml: load_balancer.region_pools.WEU[0]: unknown region 'eu-wset' "
        "(known: us-east, eu-west, apac-sg)"
    )


def test_unknown_geo_region_code() -> None:
    data = _data()
    data["load_balancer"]["region_pools"]["MARS"] = ["us-east"]
    assert "load_balancer.region_pools.MARS: unknown geo region" in _error(data)


def test_unknown_fallback_pool() -> None:
    data = _data()
    data["load_balancer"]["fallback_pool"] = "us-west"
    assert "load_balancer.fallback_pool: unknown region 'us-west'" in _error(data)


def test_duplicate_pool_name() -> None:
    data = _data()
    data["regions"]["eu-west"]["pool"] = "foundation-us-east"
    assert "regions.eu-west.pool: duplicate pool name 'foundation-us-east'" in _error(data)


def test_duplicate_origin_name() -> None:
    data = _data()
    data["regions"]["apac-sg"]["origins"][0]["name"] = "gateway-us-east"
    assert "regions.apac-sg.origins[0].name: duplicate origin name 'gateway-us-east'" in _error(
        data
    )


def test_bad_url() -> None:
    data = _data()
    data["regions"]["eu-west"]["origins"][0]["url"] = "foundation-gateway-eu"
    message = _error(data)
    assert message.startswith("failover.toml: regions.eu-west.origins[0].url: ")
    assert "not an http(s) URL" in message


def test_bad_duration() -> None:
    data = _data()
    data["monitor"]["timeout"] = "5 seconds"
    message = _error(data)
    assert message.startswith("failover.toml: monitor.timeout: ")
    assert "not a duration" in message and "30s" in message


def test_misspelt_key() -> None:
    data = _data()
    data["monitor"]["retires"] = 2
    assert _error(data) == "failover.toml: monitor.retires: is not a known key (check its spelling)"


def test_missing_key() -> None:
    data = _data()
    del data["load_balancer"]["fallback_pool"]
    assert _error(data) == "failover.toml: load_balancer.fallback_pool: is missing"


def test_bad_expected_codes() -> None:
    data = _data()
    data["monitor"]["expected_codes"] = "ok"
    assert "expected_codes: 'ok' is not a status code list" in _error(data)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nowhere.toml: file not found \(set FAILOVER_CONFIG"):
        load_fleet(tmp_path / "nowhere.toml")


def test_bad_toml(tmp_path: Path) -> None:
    path = tmp_path / "failover.toml"
    path.write_text("[regions\n")
    with pytest.raises(ConfigError, match=r"failover\.toml: not valid TOML"):
        load_fleet(path)


def test_codes_match_like_cloudflare(fleet: Fleet) -> None:
    m = fleet.monitor.model_copy(update={"expected_codes": "2xx,301"})
    assert m.code_expected(204) and m.code_expected(301)
    assert not m.code_expected(302) and not m.code_expected(503)
