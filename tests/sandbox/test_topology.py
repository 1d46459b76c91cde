"""The topology the sandbox and the demo mirror, and the seed's copy packaged with the bot."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from bot.errors import ConfigError
from bot.sandbox.topology import packaged, sandbox_topology

from ..conftest import CONFIG, ROOT, SEED_LITERAL


def test_the_packaged_seed_is_the_repository_failover_toml() -> None:
    # Edit failover.toml, then copy it: cp failover.toml bot/data/failover.toml
    assert packaged().read_bytes() == CONFIG.read_bytes()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    package_data = project["tool"]["setuptools"]["package-data"]["bot"]
    assert "data/failover.toml" in package_data  # so that a wheel carries it


def test_given_then_failover_config_then_here_then_packaged(tmp_path: Path) -> None:
    env = {"FAILOVER_CONFIG": str(SEED_LITERAL)}
    assert sandbox_topology(str(CONFIG), env, tmp_path).path == CONFIG
    assert sandbox_topology(None, env, tmp_path).path == SEED_LITERAL
    nowhere = sandbox_topology(None, {}, tmp_path)
    assert nowhere.path == packaged() and nowhere.note is not None
    assert "packaged with the bot" in nowhere.note
    (tmp_path / "failover.toml").write_text("", encoding="utf-8")
    here = sandbox_topology(None, {"FAILOVER_CONFIG": ""}, tmp_path)
    assert here.path == Path("failover.toml") and here.note is None


def test_a_named_file_that_is_missing_is_said_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^FAILOVER_CONFIG=gone.toml: file not found$"):
        sandbox_topology(None, {"FAILOVER_CONFIG": "gone.toml"}, tmp_path)
    with pytest.raises(ConfigError, match=r"^--config gone.toml: file not found$"):
        sandbox_topology("gone.toml", {}, tmp_path)
