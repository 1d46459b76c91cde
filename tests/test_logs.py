"""No token, signing secret or Authorization header in any log line."""

from __future__ import annotations

import io
import json
import logging

from bot.logs import JsonFormatter, Redactor, operation_id, request_id


def test_secrets_and_token_shapes_are_redacted() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(Redactor(["s3cr3t-signing", "cf-token-123456"]))
    log = logging.getLogger("test.redaction")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("signing secret %s and token %s", "s3cr3t-signing", "cf-token-123456")
        log.warning("slack said xoxb-1234-5678-abcdef and xapp-1-A0-99")
        log.warning("headers {'Authorization': 'Bearer abc.def.ghi'}")
        try:
            raise RuntimeError("failed with Bearer zzz-secret-zzz")
        except RuntimeError:
            log.exception("boom")
    finally:
        log.removeHandler(handler)
    out = stream.getvalue()
    for leaked in (
        "s3cr3t-signing",
        "cf-token-123456",
        "xoxb-1234",
        "xapp-1-A0",
        "abc.def.ghi",
        "zzz-secret-zzz",
    ):
        assert leaked not in out, leaked
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0]["message"] == "signing secret [redacted] and token [redacted]"
    assert "[redacted]" in lines[3]["message"] and "RuntimeError" in lines[3]["message"]


def test_lines_carry_the_request_and_operation_ids() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("test.ids")
    log.addHandler(handler)
    log.propagate = False
    try:
        r, o = request_id.set("abc12345"), operation_id.set(7)
        log.warning("inside")
        request_id.reset(r)
        operation_id.reset(o)
        log.warning("outside")
    finally:
        log.removeHandler(handler)
    inside, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert (inside["request_id"], inside["operation_id"]) == ("abc12345", 7)
    assert "request_id" not in outside and "operation_id" not in outside
