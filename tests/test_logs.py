"""No token, signing secret or Authorization header in any log line."""

from __future__ import annotations

import io
import json
import logging
import time
from urllib.parse import urlencode

from slack_bolt.middleware.request_verification.async_request_verification import (
    AsyncRequestVerification,
)
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse

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


async def test_a_refused_slack_request_is_logged_without_its_response_url_or_token() -> None:
    """Bolt logs a request whose signature fails with its whole body, at INFO: its response_url
    and the app's legacy verification token are redacted, in a form and in an interaction's
    URL-encoded JSON payload alike."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(Redactor([]))
    bolt = logging.getLogger("slack_bolt")
    level, propagate = bolt.level, bolt.propagate
    bolt.addHandler(handler)
    bolt.setLevel(logging.INFO)
    bolt.propagate = False
    hook = "https://hooks.slack.com/commands/T0SANDBOX/1234/s3cretPart"
    command = urlencode(
        {"token": "legacy-verification-token", "team_id": "T0SANDBOX", "text": "status",
         "response_url": hook}
    )  # fmt: skip
    click = urlencode(
        {
            "payload": json.dumps(
                {"type": "block_actions", "token": "legacy-verification-token",
                 "response_url": hook.replace("/", "\\/")}
            )
        }
    )  # fmt: skip
    root_level = logging.root.level
    logging.root.setLevel(logging.INFO)  # as `serve` runs (LOG_LEVEL=INFO): Bolt copies it
    verification = AsyncRequestVerification(signing_secret="the-signing-secret")
    logging.root.setLevel(root_level)

    async def never() -> BoltResponse:
        raise AssertionError("a forged request went through")

    try:
        for body in (command, click):
            request = AsyncBoltRequest(
                body=body,
                headers={
                    "x-slack-request-timestamp": [str(int(time.time()))],
                    "x-slack-signature": ["v0=" + "0" * 64],
                },
            )
            refused = await verification.async_process(
                req=request, resp=BoltResponse(status=200), next=never
            )
            assert refused.status == 401
    finally:
        bolt.removeHandler(handler)
        bolt.setLevel(level)
        bolt.propagate = propagate
    out = stream.getvalue()
    assert out.count("Invalid request signature detected") == 2  # Bolt did log both
    assert "legacy-verification-token" not in out
    assert "s3cretPart" not in out and "hooks.slack.com" not in out
    assert "team_id=T0SANDBOX" in out  # the rest of the body is still there to read
