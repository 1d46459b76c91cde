"""The import rules of DESIGN's layers, checked on every run.

1. domain (no I/O), 2. services and adapters, 3. presentation (views, commands), 4. runtime
(Slack, scheduler, assembly, CLI, sandbox, relay): imports point down, never up. The domain loads no
I/O library even transitively; views load no database or HTTP client; commands import no database;
only bot/slack (and the sandbox's Slack stand-ins, which speak Slack's protocol) imports Slack's
runtime libraries, while views use slack_sdk's Block Kit models.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOMAIN = (
    "bot.detection", "bot.durations", "bot.errors", "bot.fleet", "bot.fleetstatus",
    "bot.invocation", "bot.lbmodel", "bot.monitor", "bot.observations", "bot.operations.detail",
    "bot.operations.state", "bot.plancheck", "bot.planned", "bot.planreview", "bot.ports",
    "bot.reads", "bot.routing", "bot.safety", "bot.whatif",
)  # fmt: skip
RUNTIME = (
    "bot.slack", "bot.sandbox", "bot.scheduler", "bot.assembly", "bot.__main__", "bot.relay",
    "bot.readiness",  # `failover-bot check`: settings, database, Slack and Cloudflare together
)  # fmt: skip
IO_LIBRARIES = (
    "sqlalchemy", "alembic", "asyncpg", "aiosqlite", "aiohttp", "httpx", "cloudflare",
    "apscheduler", "slack_bolt",
)  # fmt: skip
DATABASE_AND_HTTP = ("sqlalchemy", "asyncpg", "aiosqlite", "aiohttp", "httpx", "cloudflare")


def modules() -> dict[str, Path]:
    found = {}
    for path in [*ROOT.glob("bot/**/*.py"), *ROOT.glob("commands/*.py")]:
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        found[name] = path
    return found


MODULES = modules()


def layer(module: str) -> int:
    if module in DOMAIN:
        return 1
    if module.startswith(("bot.views", "commands")):
        return 3
    if module.startswith(RUNTIME):
        return 4
    return 2


def imports(path: Path) -> list[str]:
    """What a file imports by absolute name, wherever in the file (late imports too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
    return found


def ours(name: str) -> str | None:
    """The project module an import names (``bot.x.y`` may be a module or a name in one)."""
    for candidate in (name, name.rsplit(".", 1)[0]):
        if candidate in MODULES:
            return candidate
    return None


def loaded_by(module: str) -> set[str]:
    """Every module loaded, transitively, by importing ``module`` in a fresh interpreter."""
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out))


def test_imports_point_down_or_sideways() -> None:
    upward = []
    for module, path in MODULES.items():
        for name in imports(path):
            target = ours(name)
            if target is not None and layer(target) > layer(module):
                upward.append(
                    f"{module} (layer {layer(module)}) imports {target} ({layer(target)})"
                )
    assert upward == []


@pytest.mark.parametrize("module", DOMAIN)
def test_the_domain_loads_no_io_library(module: str) -> None:
    loaded = loaded_by(module)
    assert [lib for lib in IO_LIBRARIES if lib in loaded] == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("bot.views.")))
def test_views_load_no_database_or_http_client(module: str) -> None:
    loaded = loaded_by(module)
    assert [lib for lib in DATABASE_AND_HTTP if lib in loaded] == []


def test_commands_import_no_database() -> None:
    direct = [
        f"{module} imports {name}"
        for module, path in MODULES.items()
        if module.startswith("commands")
        for name in imports(path)
        if name.split(".")[0] in ("sqlalchemy", "asyncpg", "aiosqlite") or name.startswith("bot.db")
    ]
    assert direct == []


def test_only_the_slack_runtime_imports_slack_libraries() -> None:
    allowed = ("bot.slack", "bot.sandbox.slack")
    outside = [
        f"{module} imports {name}"
        for module, path in MODULES.items()
        if not module.startswith(allowed)
        for name in imports(path)
        if name.startswith("slack_bolt")
        or (name.startswith("slack_sdk") and not name.startswith("slack_sdk.models"))
    ]
    assert outside == []
