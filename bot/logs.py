"""Logging: JSON lines when not on a terminal, and no secret in any line, ever."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from contextvars import ContextVar
from datetime import UTC, datetime

# Token shapes that must never be logged, whatever the code that logs them meant.
PATTERNS = (
    re.compile(r"xox[abposr]-[A-Za-z0-9-]+"),
    re.compile(r"xapp-[A-Za-z0-9-]+"),
    re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)(bearer\s+)?[^\s\"',}]+"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
    # Bolt logs a request whose signature fails with its whole body, at INFO: its response_url
    # lets anyone answer in the channel ("up to 5 times within 30 minutes", Slack's slash command
    # docs, api.slack.com/interactivity/slash-commands) and `token` is the app's legacy
    # verification token. As a form field, in a JSON body, in an interaction's URL-encoded JSON.
    re.compile(r"((?<![\w%])(?:token|response_url)=)[^&\s'\"]+"),
    re.compile(r"(\"(?:token|response_url)\"\s*:\s*\")[^\"]*"),
    re.compile(r"(%22(?:token|response_url)%22(?:%3A|:)(?:\+|%20)*%22).*?(?=%22|$)"),
    re.compile(r"https?(?::|%3A)(?:/|%2F|\\/){2}hooks\.slack\.com[^\s'\"&]*"),
)
REDACTED = "[redacted]"
# Set around the work for one request or one operation, so every line it logs can be found.
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
operation_id: ContextVar[int | None] = ContextVar("operation_id", default=None)


class Redactor(logging.Filter):
    """Replaces the configured secrets and anything shaped like a token in every record."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        for pattern in PATTERNS:
            text = pattern.sub(lambda m: (m.group(1) if m.re.groups else "") + REDACTED, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
            record.exc_info, record.exc_text = None, None
        record.msg, record.args = self.scrub(message), None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if (rid := request_id.get()) is not None:
            line["request_id"] = rid
        if (oid := operation_id.get()) is not None:
            line["operation_id"] = oid
        return json.dumps(line, ensure_ascii=False)


def configure(
    level: int | str, secrets: Iterable[str | None] = (), as_json: bool | None = None
) -> None:
    """Set up the root logger: JSON unless stderr is a terminal; secrets redacted either way."""
    handler = logging.StreamHandler(sys.stderr)
    if as_json if as_json is not None else not sys.stderr.isatty():
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(Redactor(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
