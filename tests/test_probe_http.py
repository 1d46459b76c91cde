"""The probe client (bot/probe_http.py) and the Prober over it, against real local servers.

A scripted TCP server answers each request with the bytes a test gives it, so that every case a
real origin can produce is exact: keep-alive or close, a reset, a redirect, a chunked or
compressed or endless body, TLS with a certificate of a local authority (trustme).
"""

from __future__ import annotations

import asyncio
import gzip
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
import trustme

from bot.fleet import MonitorSettings, Origin
from bot.health import MAX_BODY, ProbeLoop, Prober
from bot.observations import Outcome, ProbeResult
from bot.probe_http import MAX_REDIRECTS, CannotAsk, ConnectFailed, ProbeClient

HEALTHY = b'{"timestamp":"t","status":"healthy","region":"IAD","checks":{"d1":"ok","kv":"ok"}}'
DEGRADED = b'{"timestamp":"t","status":"degraded","region":"IAD","checks":{"d1":"ok","kv":"error"}}'


def answer(
    body: bytes = HEALTHY,
    status: str = "200 OK",
    close: bool = False,
    headers: tuple[str, ...] = (),
) -> bytes:
    head = [f"HTTP/1.1 {status}", "Content-Type: application/json", *headers]
    if not any(h.lower().startswith("transfer-encoding") for h in headers):
        head.append(f"Content-Length: {len(body)}")
    if close:
        head.append("Connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


@dataclass
class Reply:
    data: bytes = b""
    close: bool = False  # close after writing
    abort: bool = False  # reset the connection instead of answering
    delay: float = 0.0


@dataclass
class Seen:
    connection: int
    head: str

    @property
    def line(self) -> str:
        return self.head.split("\r\n", 1)[0]

    def header(self, name: str) -> str | None:
        for line in self.head.split("\r\n")[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None


Script = Callable[[Seen], Reply | Awaitable[Reply]]


@dataclass
class Origin_:
    """A scripted origin: every request is recorded, every answer is what ``script`` says."""

    script: Script
    ssl_context: ssl.SSLContext | None = None
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    server: asyncio.Server | None = None
    writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    def url(self, host: str = "127.0.0.1") -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://{host}:{self.port}"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            for writer in list(self.writers):
                writer.transport.abort()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        self.writers.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                seen = Seen(number, head.decode("latin-1"))
                self.seen.append(seen)
                reply = self.script(seen)
                if not isinstance(reply, Reply):
                    reply = await reply
                if reply.delay:
                    await asyncio.sleep(reply.delay)
                if reply.abort:
                    writer.transport.abort()
                    return
                writer.write(reply.data)
                await writer.drain()
                if reply.close:
                    return
        except ConnectionError:
            return
        finally:
            self.writers.discard(writer)
            writer.close()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[Origin_]]]:
    started: list[Origin_] = []

    async def start(script: Script, ssl_context: ssl.SSLContext | None = None) -> Origin_:
        origin = Origin_(script, ssl_context)
        await origin.start()
        started.append(origin)
        return origin

    yield start
    for origin in started:
        await origin.close()


def monitor(**changes: object) -> MonitorSettings:
    return MonitorSettings(timeout=0.5, retries=2).model_copy(update=changes)


async def probe_once(url: str, m: MonitorSettings | None = None, **kw: object) -> ProbeResult:
    prober = Prober(m or monitor(), **kw)  # type: ignore[arg-type]
    try:
        return await prober.probe("r", Origin(name="o", url=url))
    finally:
        await prober.aclose()


# ---------------------------------------------------------------- outcomes


async def test_healthy_sends_the_configured_request(
    serve: Callable[..., Awaitable[Origin_]],
) -> None:
    origin = await serve(lambda seen: Reply(answer()))
    m = monitor(path="/health?deep=1", headers={"User-Agent": "probe/1", "X-Token": "abc"})
    result = await probe_once(origin.url(), m)
    assert (result.outcome, result.reason, result.status_code) == (Outcome.HEALTHY, "HTTP 200", 200)
    assert result.attempts == 1 and result.latency is not None and result.latency < 0.5
    [seen] = origin.seen
    assert seen.line == "GET /health?deep=1 HTTP/1.1"
    assert seen.header("Host") == f"127.0.0.1:{origin.port}"
    assert seen.header("User-Agent") == "probe/1"
    assert seen.header("X-Token") == "abc"


async def test_the_configured_method(serve: Callable[..., Awaitable[Origin_]]) -> None:
    origin = await serve(lambda seen: Reply(answer()))
    result = await probe_once(origin.url(), monitor(method="POST"))
    assert result.healthy
    assert origin.seen[0].line == "POST /health HTTP/1.1"
    assert origin.seen[0].header("Content-Length") == "0"


async def test_head_needs_no_body(serve: Callable[..., Awaitable[Origin_]]) -> None:
    # A HEAD answer says the length of a body it does not send.
    origin = await serve(lambda seen: Reply(answer()[: answer().index(b"\r\n\r\n") + 4]))
    result = await probe_once(origin.url(), monitor(method="HEAD", expected_body=""))
    assert (result.outcome, result.status_code) == (Outcome.HEALTHY, 200)


async def test_unexpected_status_names_the_failing_checks(
    serve: Callable[..., Awaitable[Origin_]],
) -> None:
    origin = await serve(lambda seen: Reply(answer(DEGRADED, "503 Service Unavailable")))
    result = await probe_once(origin.url())
    assert result.outcome is Outcome.HTTP_STATUS
    assert result.reason == "HTTP 503: kv error"
    assert result.failing_checks == {"kv": "error"}
    assert result.attempts == 3  # retries: 2, re-asked at once
    assert len(origin.seen) == 3


async def test_server_error_without_json(serve: Callable[..., Awaitable[Origin_]]) -> None:
    origin = await serve(lambda seen: Reply(answer(b"Internal Server Error", "500 Oops")))
    result = await probe_once(origin.url())
    assert (result.outcome, result.reason) == (Outcome.HTTP_STATUS, "HTTP 500 (body is not JSON)")


async def test_body_mismatch_and_bad_json(serve: Callable[..., Awaitable[Origin_]]) -> None:
    wrong = await serve(lambda seen: Reply(answer(b'{"status":"ok"}')))
    result = await probe_once(wrong.url())
    assert (result.outcome, result.reason) == (
        Outcome.BODY_MISMATCH,
        'body lacks "status":"healthy" (status \'ok\')',
    )
    bad = await serve(lambda seen: Reply(answer(b'<html>"status":"healthy</html>')))
    result = await probe_once(bad.url())
    assert (result.outcome, result.reason) == (Outcome.BAD_JSON, "bad JSON in an HTTP 200 answer")


async def test_expected_codes(serve: Callable[..., Awaitable[Origin_]]) -> None:
    origin = await serve(lambda seen: Reply(answer()))
    assert (await probe_once(origin.url(), monitor(expected_codes="2xx"))).healthy
    result = await probe_once(origin.url(), monitor(expected_codes="204", retries=0))
    assert (result.outcome, result.reason) == (Outcome.HTTP_STATUS, "HTTP 200")


async def test_timeout_is_a_total_deadline_per_attempt(
    serve: Callable[..., Awaitable[Origin_]],
) -> None:
    # The answer starts at once and never ends: only a deadline around the whole attempt stops it.
    half = answer()[:-10]
    origin = await serve(lambda seen: Reply(half, delay=0.0))
    started = time.perf_counter()
    result = await probe_once(origin.url(), monitor(timeout=0.3))
    took = time.perf_counter() - started
    assert (result.outcome, result.reason) == (Outcome.TIMEOUT, "timeout after 0.3 s")
    assert result.attempts == 3
    assert 0.85 < took < 1.6  # three attempts of 0.3 s
    assert origin.connections == 3  # a timed-out connection is never reused


async def test_refused() -> None:
    origin = Origin_(lambda seen: Reply(answer()))
    await origin.start()
    url = origin.url()
    await origin.close()
    result = await probe_once(url)
    assert (result.outcome, result.reason) == (Outcome.REFUSED, "connection refused")


async def test_unresolvable_host_is_a_connection_error() -> None:
    result = await probe_once("http://nowhere.invalid", monitor(retries=0))
    assert result.outcome is Outcome.CONNECTION_ERROR
    assert result.reason.startswith("cannot connect: ")


async def test_a_reset_is_retried_once_for_free(serve: Callable[..., Awaitable[Origin_]]) -> None:
    calls = 0

    def first_reset(seen: Seen) -> Reply:
        nonlocal calls
        calls += 1
        return Reply(abort=True) if calls == 1 else Reply(answer())

    origin = await serve(first_reset)
    result = await probe_once(origin.url())
    assert result.healthy and result.attempts == 1
    assert len(origin.seen) == 2


async def test_resets_after_the_free_one_are_failed_attempts(
    serve: Callable[..., Awaitable[Origin_]],
) -> None:
    origin = await serve(lambda seen: Reply(abort=True))
    result = await probe_once(origin.url())
    assert result.outcome is Outcome.CONNECTION_ERROR
    assert result.reason.startswith("connection reset (")
    assert result.attempts == 3
    assert len(origin.seen) == 4  # the free retry, then 1 + retries attempts


async def test_closed_before_answering(serve: Callable[..., Awaitable[Origin_]]) -> None:
    origin = await serve(lambda seen: Reply(close=True))
    result = await probe_once(origin.url(), monitor(retries=0))
    assert (result.outcome, result.reason) == (
        Outcome.CONNECTION_ERROR,
        "connection reset (ServerDisconnectedError)",
    )


async def test_body_cut_short(serve: Callable[..., Awaitable[Origin_]]) -> None:
    origin = await serve(lambda seen: Reply(answer()[:-5], close=True))
    result = await probe_once(origin.url(), monitor(retries=0))
    assert (result.outcome, result.reason) == (
        Outcome.CONNECTION_ERROR,
        "connection reset (ClientPayloadError)",
    )


async def test_not_http(serve: Callable[..., Awaitable[Origin_]]) -> None:
    origin = await serve(lambda seen: Reply(b"SSH-2.0-OpenSSH_9.6\r\n\r\n", close=True))
    result = await probe_once(origin.url(), monitor(retries=0))
    assert result.outcome is Outcome.CONNECTION_ERROR
    assert result.reason.startswith("invalid HTTP answer")


# ---------------------------------------------------------------- bodies


async def test_the_body_is_bounded(serve: Callable[..., Awaitable[Origin_]]) -> None:
    huge = b'{"pad":"' + b"x" * (4 * MAX_BODY) + b'","status":"healthy"}'
    origin = await serve(lambda seen: Reply(answer(huge)))
    client = ProbeClient(max_body=MAX_BODY)
    try:
        got = await client.get(origin.url() + "/health")
        assert got.status == 200 and got.body == huge[:MAX_BODY]
        await client.get(origin.url() + "/health")
    finally:
        await client.aclose()
    assert origin.connections == 2  # what was left unread is never read: no reuse
    result = await probe_once(origin.url(), monitor(retries=0))
    assert result.outcome is Outcome.BAD_JSON  # the substring lies beyond the bound


async def test_chunked_gzip_and_until_close_bodies(
    serve: Callable[..., Awaitable[Origin_]],
) -> None:
    chunked = answer(
        b"10\r\n" + HEALTHY[:16] + b"\r\n" + f"{len(HEALTHY) - 16:x}".encode() + b"\r\n"
        b"" + HEALTHY[16:] + b"\r\n0\r\n\r\n",
        headers=("Transfer-Encoding: chunked",),
    )
    zipped = answer(gzip.compress(HEALTHY), headers=("Content-Encoding: gzip",))
    until_close = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + HEALTHY
    for raw, close in ((chunked, False), (zipped, False), (until_close, True)):
        origin = await serve(lambda seen, raw=raw, close=close: Reply(raw, close=close))
        result = await probe_once(origin.url(), monitor(retries=0))
        assert (result.outcome, result.reason) == (Outcome.HEALTHY, "HTTP 200"), raw[:40]


async def test_interim_answers_are_skipped(serve: Callable[..., Awaitable[Origin_]]) -> None:
    origin = await serve(lambda seen: Reply(b"HTTP/1.1 100 Continue\r\n\r\n" + answer()))
    assert (await probe_once(origin.url(), monitor(retries=0))).healthy


# ---------------------------------------------------------------- connections


async def test_kept_alive_connections_are_reused(serve: Callable[..., Awaitable[Origin_]]) -> None:
    origin = await serve(lambda seen: Reply(answer()))
    prober = Prober(monitor())
    try:
        for _ in range(5):
            assert (await prober.probe("r", Origin(name="o", url=origin.url()))).healthy
    finally:
        await prober.aclose()
    assert (len(origin.seen), origin.connections) == (5, 1)


async def test_closing_origins_get_a_new_connection_each_probe(
    serve: Callable[..., Awaitable[Origin_]],
) -> None:
    origin = await serve(lambda seen: Reply(answer(close=True), close=True))
    prober = Prober(monitor())
    try:
        for _ in range(5):
            result = await prober.probe("r", Origin(name="o", url=origin.url()))
            assert result.healthy and result.attempts == 1
    finally:
        await prober.aclose()
    assert (len(origin.seen), origin.connections) == (5, 5)


async def test_an_idle_connection_the_origin_closed_is_not_reused(
    serve: Callable[..., Awaitable[Origin_]],
) -> None:
    # The origin keeps the connection alive, then drops it while idle, without a word.
    origin = await serve(lambda seen: Reply(answer(), close=True))
    prober = Prober(monitor())
    o = Origin(name="o", url=origin.url())
    try:
        assert (await prober.probe("r", o)).healthy
        await asyncio.sleep(0.05)  # the origin's end arrives while the connection is idle
        second = await prober.probe("r", o)
    finally:
        await prober.aclose()
    assert second.healthy and second.attempts == 1
    assert (len(origin.seen), origin.connections) == (2, 2)  # no request lost on a dead one


async def test_a_kept_connection_reset_when_reused_costs_no_attempt(
    serve: Callable[..., Awaitable[Origin_]],
) -> None:
    # The race a pool cannot see: the origin drops a kept connection as the request goes out.
    def script(seen: Seen) -> Reply:
        return Reply(abort=True) if len(origin.seen) == 2 else Reply(answer())

    origin = await serve(script)
    prober = Prober(monitor())
    o = Origin(name="o", url=origin.url())
    try:
        assert (await prober.probe("r", o)).healthy
        second = await prober.probe("r", o)
    finally:
        await prober.aclose()
    assert second.healthy and second.attempts == 1
    assert origin.connections == 2


# ---------------------------------------------------------------- redirects


async def test_redirects_are_followed(serve: Callable[..., Awaitable[Origin_]]) -> None:
    target = await serve(lambda seen: Reply(answer()))

    def hops(seen: Seen) -> Reply:
        if seen.line.startswith("POST /health "):
            return Reply(answer(b"", "303 See Other", headers=("Location: /moved",)))
        if "/moved" in seen.line:
            location = f"{target.url()}/health"
            return Reply(answer(b"", "307 Temporary Redirect", headers=(f"Location: {location}",)))
        return Reply(answer(b"", "404 Not Found"))

    origin = await serve(hops)
    result = await probe_once(origin.url(), monitor(method="POST"))
    assert (result.outcome, result.status_code) == (Outcome.HEALTHY, 200)
    assert [s.line for s in origin.seen] == ["POST /health HTTP/1.1", "GET /moved HTTP/1.1"]
    assert [s.line for s in target.seen] == ["GET /health HTTP/1.1"]  # 303 made it a GET
    assert target.seen[0].header("Host") == f"127.0.0.1:{target.port}"


async def test_a_redirect_loop_ends(serve: Callable[..., Awaitable[Origin_]]) -> None:
    origin = await serve(
        lambda seen: Reply(answer(b"", "302 Found", headers=("Location: /health",)))
    )
    result = await probe_once(origin.url(), monitor(retries=0))
    assert result.outcome is Outcome.CONNECTION_ERROR
    assert result.reason == f"too many redirects (more than {MAX_REDIRECTS})"
    assert len(origin.seen) == MAX_REDIRECTS + 1
    assert origin.connections == 1  # the hops reuse the kept connection


async def test_redirects_share_the_attempts_deadline(
    serve: Callable[..., Awaitable[Origin_]],
) -> None:
    slow = await serve(
        lambda seen: Reply(answer(b"", "302 Found", headers=("Location: /health",)), delay=0.1)
    )
    started = time.perf_counter()
    result = await probe_once(slow.url(), monitor(timeout=0.35, retries=0))
    assert result.outcome is Outcome.TIMEOUT
    assert time.perf_counter() - started < 0.9  # not 11 hops of 0.1 s


# ---------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


def tls_pair(ca: trustme.CA, *names: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


async def test_tls_checks_the_certificate_for_the_host(
    serve: Callable[..., Awaitable[Origin_]], authority: trustme.CA
) -> None:
    server, client = tls_pair(authority, "localhost")
    origin = await serve(lambda seen: Reply(answer()), server)
    result = await probe_once(origin.url("localhost"), ssl_context=client)
    assert (result.outcome, result.status_code) == (Outcome.HEALTHY, 200)
    assert origin.seen[0].header("Host") == f"localhost:{origin.port}"
    # The same server by another name: its certificate does not say 127.0.0.1.
    wrong = await probe_once(origin.url("127.0.0.1"), monitor(retries=0), ssl_context=client)
    assert wrong.outcome is Outcome.CONNECTION_ERROR
    assert "CERTIFICATE_VERIFY_FAILED" in wrong.reason
    # Without the local authority, the system's do not know it.
    unknown = await probe_once(origin.url("localhost"), monitor(retries=0))
    assert unknown.outcome is Outcome.CONNECTION_ERROR
    assert unknown.reason.startswith("cannot connect: ")


async def test_tls_connections_are_reused(
    serve: Callable[..., Awaitable[Origin_]], authority: trustme.CA
) -> None:
    server, client = tls_pair(authority, "localhost")
    origin = await serve(lambda seen: Reply(answer()), server)
    prober = Prober(monitor(), ssl_context=client)
    try:
        for _ in range(3):
            assert (await prober.probe("r", Origin(name="o", url=origin.url("localhost")))).healthy
    finally:
        await prober.aclose()
    assert origin.connections == 1


# ---------------------------------------------------------------- the client alone


async def test_client_errors_are_typed(serve: Callable[..., Awaitable[Origin_]]) -> None:
    client = ProbeClient()
    try:
        with pytest.raises(ConnectFailed) as refused:
            await client.get("http://127.0.0.1:1/health")
        assert refused.value.refused
        with pytest.raises(CannotAsk):
            await client.get("ftp://127.0.0.1/health")
        with pytest.raises(CannotAsk):
            ProbeClient(headers={"X-Evil": "a\r\nHost: b"})._target("http://h", "GET")
    finally:
        await client.aclose()


async def test_probe_all_with_a_budget(serve: Callable[..., Awaitable[Origin_]]) -> None:
    fast = await serve(lambda seen: Reply(answer()))
    slow = await serve(lambda seen: Reply(answer(), delay=2))
    prober = Prober(monitor(timeout=5))
    try:
        results = await prober.probe_all(
            [
                ("a", Origin(name="fast", url=fast.url())),
                ("b", Origin(name="slow", url=slow.url())),
            ],
            budget=0.3,
        )
    finally:
        await prober.aclose()
    assert [r.outcome for r in results] == [Outcome.HEALTHY, Outcome.NO_ANSWER]
    assert results[1].reason == "no answer within 0.3 s"


# ---------------------------------------------------------------- the loop


async def test_the_loop_probes_each_origin_once_per_interval_and_confirms_at_once(
    serve: Callable[..., Awaitable[Origin_]],
) -> None:
    origin = await serve(lambda seen: Reply(answer(), delay=0.0))
    targets = [("r", Origin(name=f"o{i}", url=origin.url())) for i in range(10)]
    seen: list[ProbeResult] = []
    confirmed: set[str] = set()

    async def on_result(result: ProbeResult) -> bool:
        seen.append(result)
        first = result.origin not in confirmed
        confirmed.add(result.origin)
        return first  # the first result of each origin asks for one confirmation

    prober = Prober(monitor())
    loop = ProbeLoop(prober, targets, 0.5, on_result, confirmations=2)
    loop.start()
    await asyncio.sleep(1.2)  # the first slots and their confirmations, then two more rounds
    await loop.stop()
    await prober.aclose()
    assert not loop.running
    per_origin = {t[1].name: sum(1 for r in seen if r.origin == t[1].name) for t in targets}
    assert all(3 <= n <= 5 for n in per_origin.values()), per_origin
    assert len(seen) <= loop.probes <= len(seen) + len(targets)  # some were cut short by stop
    assert (loop.late, loop.dropped) == (0, 0)
    assert all(r.healthy for r in seen)
