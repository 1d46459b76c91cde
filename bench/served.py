"""`failover-bot serve` in its own process, as the Procfile runs it, for the benchmarks.

A bot sharing the benchmark's event loop would share its CPU with the stand-ins and the load;
in its own process it is measured as it runs in service.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def start_bot(env: dict[str, str], within: float = 20.0) -> asyncio.subprocess.Process:
    """Migrate the database in ``env``, then serve on ``env["PORT"]`` once /healthz answers."""
    migrate = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "migrate", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    if await migrate.wait() != 0:
        raise SystemExit("failover-bot migrate failed")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "serve", cwd=ROOT, env=env,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    health = f"http://127.0.0.1:{env['PORT']}/healthz"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    async with httpx.AsyncClient() as http:
        while loop.time() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if (await http.get(health)).status_code == 200:
                    return proc
            await asyncio.sleep(0.1)
    await stop(proc)
    raise SystemExit(f"failover-bot serve did not answer /healthz within {within:g} s")


async def stop(proc: asyncio.subprocess.Process | None) -> None:
    """SIGTERM, as a platform stops a dyno; killed if it has not exited in 15 s."""
    if proc is not None and proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()
