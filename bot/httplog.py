"""One log line, without a traceback, for malformed HTTP that aiohttp's server refuses itself.

aiohttp answers a request it cannot parse (a bad chunk size, a header line over 8 KiB, a broken
request line) with 400 on its own, and logs "Error handling request" with the parser's
traceback at ERROR. That is the peer's mistake, not the bot's, and scanners send it all day:
the line is kept, at WARNING, with what was wrong, and the traceback is dropped.
"""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import HttpProcessingError


class BadHttpOnOneLine(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            # The parser's message quotes the bytes it choked on below; its first line says why.
            why = (exc.message or type(exc).__name__).strip().splitlines()[0][:200]
            record.msg = f"refused malformed HTTP: {record.getMessage()}: {exc.code} {why}"
            record.args = None
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def one_line_for_bad_http() -> None:
    """Install the filter on aiohttp's server logger (once; idempotent)."""
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, BadHttpOnOneLine) for f in server.filters):
        server.addFilter(BadHttpOnOneLine())
