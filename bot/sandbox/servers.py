"""Starting and stopping small aiohttp servers on 127.0.0.1."""

from __future__ import annotations

import socket

from aiohttp import web

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


class LocalServer:
    """An aiohttp application listening on 127.0.0.1; ``port`` stays the same across restarts."""

    def __init__(self, app: web.Application, port: int | None = None) -> None:
        self.app = app
        # Hold the port from the start: a port merely picked could be taken before it is bound.
        self._sock: socket.socket | None = None
        if port is None:
            self._sock = socket.socket()
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._sock.bind((HOST, 0))
            port = int(self._sock.getsockname()[1])
        self.port = port
        # Sandbox servers may hold slow requests; closing must not wait for them.
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=0.2
        )
        self._site: web.BaseSite | None = None
        self._set_up = False

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def listening(self) -> bool:
        return self._site is not None

    async def start(self) -> None:
        if not self._set_up:
            await self._runner.setup()
            self._set_up = True
        if self._site is None:
            if self._sock is not None:
                self._site, self._sock = web.SockSite(self._runner, self._sock), None
            else:
                self._site = web.TCPSite(self._runner, HOST, self.port, reuse_address=True)
            await self._site.start()

    async def stop_listening(self) -> None:
        """Close the listening socket: new connections are refused, the app stays ready."""
        if self._site is not None:
            await self._site.stop()
            self._site = None

    async def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        await self.stop_listening()
        if self._set_up:
            await self._runner.cleanup()
            self._set_up = False
