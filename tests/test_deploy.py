"""Deployable as the README says: the lock buildpacks install, the Python version they read, the
container files, the Slack manifest, and the wheel installed and run in a fresh environment."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

import migrations
from bot.sandbox.servers import free_port

from .conftest import ROOT, Served

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def pinned_requirements() -> tuple[list[Requirement], list[str]]:
    """requirements.txt's pins, and its other lines (the bot itself: ".")."""
    pins, others = [], []
    for raw in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line == ".":
            others.append(line)
        else:
            pins.append(Requirement(line))
    return pins, others


def test_requirements_pin_exactly_pyprojects_runtime_dependencies() -> None:
    declared = {
        Requirement(d).name.lower(): Requirement(d) for d in PYPROJECT["project"]["dependencies"]
    }
    pins, others = pinned_requirements()
    assert {p.name.lower() for p in pins} == set(declared), "run `make lock`"
    assert others == ["."]  # then the bot itself, for its `failover-bot` command
    for pin in pins:
        want = declared[pin.name.lower()]
        [spec] = list(pin.specifier)
        assert spec.operator == "==", f"{pin} is not pinned"
        assert want.specifier.contains(spec.version, prereleases=True), (
            f"{pin} does not satisfy pyproject.toml's {want}: run `make lock`"
        )
        assert pin.extras == want.extras and pin.marker == want.marker, pin


def test_python_version_for_buildpacks_is_one_the_project_supports() -> None:
    pinned = (ROOT / ".python-version").read_text(encoding="utf-8").strip()
    assert pinned == "3.11"
    assert SpecifierSet(PYPROJECT["project"]["requires-python"]).contains(f"{pinned}.0")


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions, (KEYWORD, arguments), continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    text = re.sub(r"\\\n\s*", " ", text)
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def healthcheck_command() -> list[str]:
    [check] = [rest for keyword, rest in dockerfile() if keyword == "HEALTHCHECK"]
    command: list[str] = json.loads(check.split("CMD", 1)[1])
    return command


def test_the_dockerfile_runs_serve_as_a_user_on_python_311_slim() -> None:
    steps = dockerfile()
    assert steps[0] == ("FROM", "python:3.11-slim")
    [user] = [rest for keyword, rest in steps if keyword == "USER"]
    assert user not in ("root", "0")
    [cmd] = [rest for keyword, rest in steps if keyword == "CMD"]
    assert json.loads(cmd) == ["failover-bot", "serve"]
    copied = " ".join(rest for keyword, rest in steps if keyword == "COPY")
    for needed in (
        "requirements.txt",
        "pyproject.toml",
        "README.md",
        "bot",
        "commands",
        "migrations",
    ):
        assert needed in copied, needed
    # The slim image has no curl: the health check is Python's own urllib.
    command = healthcheck_command()
    assert command[:2] == ["python", "-c"] and "urllib.request" in command[2]
    assert "curl" not in " ".join(rest for _, rest in steps)


async def run_healthcheck(port: int) -> int:
    # In its own process, as Docker runs it, while this loop keeps the bot serving.
    command = healthcheck_command()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *command[1:], env={**os.environ, "PORT": str(port)}
    )
    return await asyncio.wait_for(proc.wait(), 10)


async def test_the_dockerfiles_healthcheck_asks_healthz(served: Served) -> None:
    port = int(served.server.url.rsplit(":", 1)[1])
    assert await run_healthcheck(port) == 0
    assert await run_healthcheck(free_port()) != 0  # nothing listening: unhealthy


def test_compose_migrates_then_serves_with_postgresql() -> None:
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
    services = compose["services"]
    assert services["db"]["image"].startswith("postgres:")
    migrate, bot = services["migrate"], services["bot"]
    assert migrate["command"] == ["failover-bot", "migrate"]
    assert bot.get("command") is None  # the image's: failover-bot serve
    assert bot["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert migrate["depends_on"]["db"]["condition"] == "service_healthy"
    for service in (migrate, bot):
        assert service["env_file"] == ".env"
        assert service["environment"]["DATABASE_URL"].startswith("postgresql://")
        assert "@db:5432/" in service["environment"]["DATABASE_URL"]
    assert bot["ports"] == ["3000:3000"] and bot["environment"]["PORT"] == "3000"


def env_example() -> tuple[dict[str, str], set[str]]:
    """.env.example's variables: those set (blank or not), and every one named (commented too)."""
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    set_ = dict(re.findall(r"^([A-Z_]+)=(.*)$", text, re.MULTILINE))
    named = set(re.findall(r"^#? ?([A-Z_]+)=", text, re.MULTILINE))
    return set_, named


def test_the_env_example_names_the_settings_and_its_blanks_read_as_unset(tmp_path: Path) -> None:
    values, named = env_example()
    assert {
        "SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_CHANNEL", "SLACK_APP_TOKEN",
        "CLOUDFLARE_API_TOKEN", "CLOUDFLARE_ACCOUNT_ID", "CLOUDFLARE_ZONE_ID", "DATABASE_URL",
    } <= named  # fmt: skip
    # Copied as it is, the template is incomplete, never malformed: each blank reads as unset.
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "CLOUDFLARE_"))}
    env = clean | values | {"DATABASE_URL": f"sqlite:///{tmp_path}/bot.db"}
    done = subprocess.run(
        [sys.executable, "-m", "bot", "check"], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    failed = [line for line in done.stdout.splitlines() if line.startswith("FAIL")]
    assert [line.split(":")[0] for line in failed] == [
        "FAIL  SLACK_BOT_TOKEN is not set",
        "FAIL  SLACK_SIGNING_SECRET is not set",
        "FAIL  database sqlite",  # not migrated yet: what the operator does next
    ]


def test_the_manifest_asks_only_for_the_scopes_the_bot_uses() -> None:
    yaml = pytest.importorskip("yaml")
    manifest = yaml.safe_load((ROOT / "manifest.yml").read_text(encoding="utf-8"))
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    # commands: /failover; chat:write (+ .public): replies, alerts, their threads, in a channel
    # the bot was not invited to; usergroups:read: [access] given as user groups.
    assert scopes == {"commands", "chat:write", "chat:write.public", "usergroups:read"}
    sources = [*ROOT.glob("bot/**/*.py"), *ROOT.glob("commands/*.py")]
    users_calls = [
        str(path.relative_to(ROOT))
        for path in sources
        if "sandbox" not in path.parts
        and re.search(
            r"\busers_(info|list|lookupByEmail|profile_get)\b|\"users\.", path.read_text()
        )
    ]
    assert users_calls == []  # nothing needs users:read


def copy_source(to: Path) -> Path:
    """What the wheel is built from, copied: building in the tree would leave build/ there."""
    src = to / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for package in ("bot", "commands", "migrations"):
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    return src


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_wheel_installs_and_migrates_and_checks_in_a_fresh_environment(tmp_path: Path) -> None:
    wheelhouse = tmp_path / "wheelhouse"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(wheelhouse),
         str(copy_source(tmp_path))],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    [wheel] = wheelhouse.glob("failover_bot-*.whl")
    fresh = tmp_path / "venv"
    venv.create(fresh, with_pip=False)  # this pip installs into it (--python): no ensurepip
    python = fresh / "bin" / "python"
    pins, _ = pinned_requirements()
    constraints = tmp_path / "pins.txt"
    constraints.write_text("\n".join(str(p) for p in pins) + "\n", encoding="utf-8")
    # The pinned dependencies from the machine's configured index, as a buildpack would;
    # without compiling every module of the SDKs to bytecode first (the slowest part).
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         "--no-compile", "-r", str(constraints), str(wheel)],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-2000:]

    # Run from elsewhere than the repository, so nothing is imported from the source tree.
    workdir = tmp_path / "run"
    workdir.mkdir()
    cli = str(fresh / "bin" / "failover-bot")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "CLOUDFLARE_"))}
    env |= {
        "DATABASE_URL": f"sqlite:///{workdir}/bot.db",
        "FAILOVER_CONFIG": str(ROOT / "failover.toml"),
        "SLACK_BOT_TOKEN": "xoxb-1",
        "SLACK_SIGNING_SECRET": "s",
        "PYTHONPATH": "",
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [cli, *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=60
        )

    version = run("--version")
    assert version.stdout.strip() == f"failover-bot {PYPROJECT['project']['version']}"
    migrated = run("migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.strip() == f"database schema at {migrations.HEAD}"
    checked = run("check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.splitlines()[-1].startswith("ready: `failover-bot serve` has what it")
    where = subprocess.run(
        [str(python), "-c", "import bot; print(bot.__file__)"], cwd=workdir, env=env,
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert str(fresh) in where  # the installed copy ran, not the repository's
