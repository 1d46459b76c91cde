"""Reading a webhook's body with a size cap and a time limit, for every receiver of the bot: a
sender that never finishes, or sends megabytes, costs the bot at most ``within`` seconds and
``limit`` bytes, and gets a short answer (408, 413; 400 for a broken chunked encoding)."""

from __future__ import annotations

import asyncio

from aiohttp import web

MAX_BODY = 64 * 1024  # webhooks carry one small JSON event; 64 KiB is far more than enough


class BodyRefused(Exception):
    """The body was not read: ``status`` and a short ``reason`` to answer with."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


async def read_body(request: web.Request, within: float, limit: int = MAX_BODY) -> bytes:
    """The whole body, or BodyRefused: 413 over ``limit`` (by Content-Length or as it arrives),
    408 not received within ``within`` seconds, 400 malformed."""
    if request.content_length is not None and request.content_length > limit:
        raise BodyRefused(413, f"body of {request.content_length} bytes, over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(within):
            while chunk := await request.content.readany():
                size += len(chunk)
                if size > limit:
                    raise BodyRefused(413, f"body over {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise BodyRefused(408, f"body not received within {within:g} s") from None
    except web.RequestPayloadError as exc:
        raise BodyRefused(400, f"malformed body: {str(exc).splitlines()[-1].strip()}") from None
    return b"".join(chunks)
