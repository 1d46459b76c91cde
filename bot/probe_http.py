"""A small HTTP/1.1 client for probes, on asyncio's protocols and httptools' C parser.

A probe asks one small thing of one origin, again and again: aiohttp's client spends most of a
probe's CPU on what a probe does not need (its connector's bookkeeping, tracing, cookies, a
response object with streams). This client does only what Cloudflare's monitor does, so that
1,000 origins a second fit in a fraction of one core, connections kept alive or not (on
bench/monitor.py's fleet, origins closing each connection: the probe loop on this client and
uvloop about 16 % of a core, on aiohttp's client 50 %):

* one request per attempt (the configured method, path and headers over ``Host``, ``User-Agent``
  and ``Accept: */*``; no ``Accept-Encoding``, so origins answer uncompressed; the request's
  bytes are built once per URL), the answer's status and body, the body bounded (``max_body``:
  what lies beyond is never read, and that connection is not reused);
* connections reused while the origin keeps them alive (an idle one the origin closed is dropped
  as soon as its end is seen; one idle longer than ``IDLE`` is not reused), a new TCP connection
  otherwise;
* TLS for https origins (one default context, SNI and certificate checked for the URL's host);
* host names resolved once per ``DNS_TTL`` (a failure is never remembered);
* redirects followed (301, 302, 303, 307, 308; a 303, or a 301/302 to a POST, becomes a GET), up
  to ``MAX_REDIRECTS``, within the same deadline; a gzip or deflate body decoded.

The caller bounds each attempt with its deadline (``asyncio.timeout``): a connection whose
request is cancelled is aborted, never reused. Failures are ``ProbeError`` subclasses whose
``reason`` is what an operator reads; the names given to a lost connection are those aiohttp gave
the same cases (``ServerDisconnectedError``, ``ClientOSError``, ``ClientPayloadError``), which
operators may already match on.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import socket
import ssl
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httptools

MAX_REDIRECTS = 10
IDLE = 15.0  # s: an idle connection older than this is closed rather than reused (aiohttp's)
DNS_TTL = 300.0  # s: how long a host name's addresses are reused
MAX_IDLE_CONNECTIONS = 4096  # beyond this, a connection the origin would keep is closed instead
REDIRECTS = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "failover-bot health probe"


class ProbeError(Exception):
    """An attempt that got no complete answer."""

    @property
    def reason(self) -> str:
        return str(self)


class ConnectFailed(ProbeError):
    """No connection: refused, unreachable, unresolvable, or TLS refused."""

    def __init__(self, os_error: OSError) -> None:
        super().__init__(f"cannot connect: {os_error}")
        self.os_error = os_error

    @property
    def refused(self) -> bool:
        return isinstance(self.os_error, ConnectionRefusedError)


class ConnectionLost(ProbeError):
    """The connection ended before the answer was complete."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"connection reset ({kind})")
        self.kind = kind
        self.detail = detail


class BadAnswer(ProbeError):
    """Something that is not an HTTP/1.x answer, or too many redirects."""


class CannotAsk(ProbeError):
    """A URL or a header this client cannot send (not http(s), a line break, not Latin-1)."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes  # at most the client's max_body bytes, decoded when gzip or deflate


class _Target:
    """What a URL needs, worked out once: where to connect and the request's bytes."""

    __slots__ = ("addresses", "head", "host", "key", "port", "request", "tls", "url")

    def __init__(self, url: str, method: str, headers: Mapping[str, str]) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CannotAsk(f"not an http(s) URL: {url}")
        self.url = url
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        try:
            self.port = parts.port or (443 if self.tls else 80)
        except ValueError:
            raise CannotAsk(f"bad port in {url}") from None
        self.key = (self.tls, self.host, self.port)
        # An address needs no resolving: worked out once, not at each connection.
        self.addresses: list[tuple[int, str]] | None = None
        if _literal(self.host):
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            self.addresses = [(int(family), self.host)]
        self.head = method.upper() == "HEAD"
        host = f"[{self.host}]" if ":" in self.host else self.host
        if parts.port is not None and parts.port != (443 if self.tls else 80):
            host = f"{host}:{parts.port}"
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        fields = {"host": ("Host", host), "user-agent": ("User-Agent", USER_AGENT)}
        fields["accept"] = ("Accept", "*/*")
        if parts.username is not None:
            secret = f"{parts.username}:{parts.password or ''}".encode()
            fields["authorization"] = (
                "Authorization",
                "Basic " + base64.b64encode(secret).decode(),
            )
        for name, value in headers.items():
            if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
                raise CannotAsk(f"header {name!r} has a line break")
            fields[name.lower()] = (name, value)
        if method.upper() in ("POST", "PUT", "PATCH"):
            fields["content-length"] = ("Content-Length", "0")
        lines = [f"{method.upper()} {target} HTTP/1.1"]
        lines += [f"{name}: {value}" for name, value in fields.values()]
        try:
            self.request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        except UnicodeEncodeError:
            raise CannotAsk(f"the request for {url} cannot be sent: not Latin-1") from None


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection and its answers, parsed as they arrive."""

    __slots__ = (
        "_body",
        "_complete",
        "_encoding",
        "_headers_done",
        "_length_known",
        "_location",
        "_size",
        "_waiter",
        "closed",
        "head",
        "idle_since",
        "key",
        "max_body",
        "parser",
        "reusable",
        "status",
        "transport",
    )

    def __init__(self, key: tuple[bool, str, int], max_body: int) -> None:
        self.key = key
        self.max_body = max_body
        self.transport: asyncio.Transport | None = None
        self.parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self.closed = False
        self.reusable = False
        self.idle_since = 0.0
        self.head = False
        self._waiter: asyncio.Future[None] | None = None
        self._reset()

    def _reset(self) -> None:
        self._body: list[bytes] = []
        self._size = 0
        self._complete = False
        self._headers_done = False
        self._length_known = False
        self._encoding = b""
        self._location = b""
        self.status = 0

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._complete:
            self._close()  # bytes nobody asked for: never reuse this connection
            return
        parser = self.parser
        if parser is None:
            return
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(BadAnswer("invalid HTTP answer: an upgrade was not asked for"))
        except httptools.HttpParserError as exc:
            if self._headers_done:
                self._fail(ConnectionLost("ClientPayloadError", str(exc)))
            else:
                self._fail(BadAnswer(f"invalid HTTP answer: {exc}"))

    def eof_received(self) -> bool:
        return False  # close our end too; connection_lost tells the waiter

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if self._headers_done and not self._length_known and exc is None:
                self._done()  # a body delimited by the end of the connection
            elif exc is not None:
                self._fail(ConnectionLost("ClientOSError", str(exc)))
            elif self._headers_done:
                self._fail(ConnectionLost("ClientPayloadError", "the body was cut short"))
            else:
                self._fail(ConnectionLost("ServerDisconnectedError"))
        # The parser calls back into this object, and the transport may too: break the cycles,
        # so that a closed connection is freed at once rather than by the garbage collector.
        self.parser = None
        self.transport = None

    # httptools' callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-length" or name == b"transfer-encoding":
            self._length_known = True
        elif name == b"location":
            self._location = value
        elif name == b"content-encoding":
            self._encoding = value.strip().lower()

    def on_headers_complete(self) -> None:
        self._headers_done = True
        assert self.parser is not None
        self.status = self.parser.get_status_code()
        if self.status < 200 and self.status != 101:
            self._reset()  # 100 Continue and friends: the real answer follows
            return
        if self.status in (204, 304) or self.status < 200:
            self._length_known = True
        if self.head:
            self._length_known = True
            self.reusable = False  # llhttp would wait for a body a HEAD answer does not have
            self._done()

    def on_body(self, body: bytes) -> None:
        if self._complete:
            return
        room = self.max_body - self._size
        if len(body) >= room:
            self._body.append(body[:room])
            self._size = self.max_body
            self.reusable = False  # the rest is never read
            self._done()
        else:
            self._body.append(body)
            self._size += len(body)

    def on_message_complete(self) -> None:
        if not self._complete and self.status >= 200 and self.parser is not None:
            self.reusable = self.parser.should_keep_alive()
            self._done()

    # the client's side

    def _done(self) -> None:
        self._complete = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: ProbeError) -> None:
        self.reusable = False
        self._close()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    def _close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    async def ask(self, request: bytes, head: bool) -> Answer:
        """Send ``request`` and wait for its whole answer (the body bounded)."""
        if self.transport is None:
            raise ConnectionLost("ServerDisconnectedError")
        self._reset()
        self.head = head
        self.reusable = False
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            self.transport.write(request)
            await waiter
        finally:
            self._waiter = None
        body = b"".join(self._body) if len(self._body) != 1 else self._body[0]
        if self._encoding in (b"gzip", b"x-gzip", b"deflate"):
            body = _decoded(body, self._encoding, self.max_body)
        return Answer(self.status, body)

    @property
    def location(self) -> str:
        return self._location.decode("latin-1").strip()


def _decoded(body: bytes, encoding: bytes, limit: int) -> bytes:
    try:
        if encoding == b"deflate":
            try:
                return zlib.decompressobj().decompress(body, limit)
            except zlib.error:
                return zlib.decompressobj(-zlib.MAX_WBITS).decompress(body, limit)
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(body, limit)
    except zlib.error:
        raise ConnectionLost("ClientPayloadError", f"cannot decode {encoding.decode()}") from None


def _literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class ProbeClient:
    """Requests for probes over reused connections; ``aclose`` closes them all."""

    def __init__(
        self,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        *,
        max_body: int = 64 * 1024,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.method = method.upper()
        self.headers = dict(headers or {})
        self.max_body = max_body
        self._ssl = ssl_context
        self._targets: dict[str, _Target] = {}
        self._idle: dict[tuple[bool, str, int], list[_Connection]] = {}
        self._idle_count = 0
        self._open: set[_Connection] = set()
        self._dns: dict[tuple[str, int], tuple[float, list[tuple[int, str]]]] = {}

    @property
    def ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()  # costly: once, and only for https
        return self._ssl

    def _target(self, url: str, method: str) -> _Target:
        key = url if method == self.method else f"{method} {url}"
        target = self._targets.get(key)
        if target is None:
            if len(self._targets) > 100_000:
                self._targets.clear()  # redirects to ever new URLs: never grow without bound
            target = self._targets[key] = _Target(url, method, self.headers)
        return target

    async def get(self, url: str) -> Answer:
        """The answer to the configured request of ``url``, redirects followed."""
        method = self.method
        for _ in range(MAX_REDIRECTS + 1):
            target = self._target(url, method)
            answer, location = await self._exchange(target)
            if answer.status not in REDIRECTS or not location:
                return answer
            url = urljoin(url, location)
            if (answer.status == 303 and method != "HEAD") or (
                answer.status in (301, 302) and method == "POST"
            ):
                method = "GET"
        raise BadAnswer(f"too many redirects (more than {MAX_REDIRECTS})")

    async def _exchange(self, target: _Target) -> tuple[Answer, str]:
        conn = self._pooled(target.key)
        if conn is None:
            conn = await self._connect(target)
        try:
            answer = await conn.ask(target.request, target.head)
        except BaseException:
            conn.abort()  # a timeout or an error mid-answer: this connection is done
            self._open.discard(conn)
            raise
        location = conn.location if answer.status in REDIRECTS else ""
        self._release(conn)
        return answer, location

    def _pooled(self, key: tuple[bool, str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        now = asyncio.get_running_loop().time()
        while idle:
            conn = idle.pop()
            self._idle_count -= 1
            if not conn.closed and now - conn.idle_since < IDLE:
                return conn
            conn._close()  # closed by the origin meanwhile, or idle too long: let it go
            self._open.discard(conn)
        return None

    def _release(self, conn: _Connection) -> None:
        if conn.reusable and not conn.closed and self._idle_count < MAX_IDLE_CONNECTIONS:
            conn.idle_since = asyncio.get_running_loop().time()
            self._idle.setdefault(conn.key, []).append(conn)
            self._idle_count += 1
        else:
            conn._close()
            self._open.discard(conn)

    async def _addresses(self, host: str, port: int) -> list[tuple[int, str]]:
        loop = asyncio.get_running_loop()
        cached = self._dns.get((host, port))
        if cached is not None and cached[0] > loop.time():
            return cached[1]
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise ConnectFailed(exc) from None
        found: list[tuple[int, str]] = list(
            dict.fromkeys((int(info[0]), str(info[4][0])) for info in infos)
        )
        self._dns[(host, port)] = (loop.time() + DNS_TTL, found)
        return found

    async def _connect(self, target: _Target) -> _Connection:
        loop = asyncio.get_running_loop()
        error: OSError | None = None
        addresses = target.addresses
        if addresses is None:
            addresses = await self._addresses(target.host, target.port)
        for family, address in addresses:
            conn = _Connection(target.key, self.max_body)
            try:
                if target.tls:
                    await loop.create_connection(
                        lambda conn=conn: conn,  # type: ignore[misc]
                        address,
                        target.port,
                        family=family,
                        ssl=self.ssl_context,
                        server_hostname=target.host,
                    )
                else:
                    await loop.create_connection(
                        lambda conn=conn: conn,  # type: ignore[misc]
                        address,
                        target.port,
                        family=family,
                    )
            except OSError as exc:
                error = error if isinstance(error, ConnectionRefusedError) else exc
                continue
            self._open.add(conn)
            return conn
        raise ConnectFailed(error or OSError(f"no address for {target.host}"))

    async def aclose(self) -> None:
        for conn in list(self._open):
            conn.abort()
        self._open.clear()
        self._idle.clear()
        self._idle_count = 0
        await asyncio.sleep(0)  # let the transports' connection_lost run
