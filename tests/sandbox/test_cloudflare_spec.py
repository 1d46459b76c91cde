"""The Cloudflare stand-in answers, and the bot asks, as Cloudflare's OpenAPI description says."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from openapi_core import Config, OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from openapi_core.validation.request.validators import (
    V30RequestBodyValidator,
    V30RequestSecurityValidator,
)
from openapi_schema_validator import OAS30Validator

from bot.cloudflare_api.cloudflare import CloudflareLoadBalancer
from bot.errors import ProviderError
from bot.sandbox.world import Sandbox

from ..conftest import ROOT

SPEC = ROOT.parent / "shared" / "reference" / "cloudflare-lb-openapi.json"
SERVER = "https://api.cloudflare.com"

pytestmark = pytest.mark.skipif(not SPEC.exists(), reason=f"{SPEC} is not beside the project")


@pytest.fixture(scope="module")
def spec() -> OpenAPI:
    # The trimmed description does not itself pass the strict spec validator (one schema has
    # `required: none`); requests and responses are still validated against its schemas.
    return OpenAPI.from_file_path(str(SPEC), config=Config(spec_validator_cls=None))


async def drive_every_endpoint(world: Sandbox) -> None:
    cf = world.cloudflare
    lb = CloudflareLoadBalancer(
        cf.token, cf.account_id, cf.zone_id, base_url=cf.base_url, timeout=1.0
    )
    try:
        view = await lb.live_view("api.erlvinc.com")
        pool = next(iter(view.pools.values()))
        await lb.monitors()
        await lb.pool(pool.id)
        await lb.pool_health(pool.id)
        await lb.health_events(since=datetime.now(UTC) - timedelta(hours=1), pool_id=pool.id)
        await lb.set_pool_enabled(pool.id, False)
        await lb.set_origin_enabled(pool.id, pool.origins[0].name, False)
        async with httpx.AsyncClient() as http:
            # Writable keys the bot's client does not send, as the description allows them.
            await http.patch(
                f"{cf.base_url}/zones/{cf.zone_id}/load_balancers/{cf.lb_id}",
                json={"rules": [], "country_pools": {}, "pop_pools": {}},
                headers={"Authorization": f"Bearer {cf.token}"},
            )
            await lb.set_pool_enabled(pool.id, True)  # unknown health: no `healthy` key
            await lb.pool_health(pool.id)
            base = cf.server.url
            await http.post(f"{base}/_sandbox/faults", json={"kind": "forbidden", "times": 1})
            with pytest.raises(ProviderError):
                await lb.pools()
            await http.post(
                f"{base}/_sandbox/faults", json={"kind": "429", "times": 3, "retry_after": 0}
            )
            with pytest.raises(ProviderError):
                await lb.pools()
        with pytest.raises(ProviderError):
            await lb.pool("0" * 32)
    finally:
        await lb.aclose()


async def test_every_exchange_matches_the_spec(world: Sandbox, spec: OpenAPI) -> None:
    await drive_every_endpoint(world)
    exchanges = world.cloudflare.exchanges
    seen = {(e.method, e.status) for e in exchanges}
    assert {("GET", 200), ("PATCH", 200), ("GET", 403), ("GET", 429), ("GET", 404)} <= seen
    document = json.loads(SPEC.read_text())
    failure = OAS30Validator(
        {
            "$ref": "#/components/schemas/load-balancing_api-response-common-failure",
            "components": document["components"],
        }
    )
    for e in exchanges:
        request = MockRequest(
            SERVER,
            e.method.lower(),
            "/client/v4" + e.path,
            args=e.query,
            headers={"Authorization": f"Bearer {world.cloudflare.token}"},
            data=e.request_body or None,
        )
        # Path parameters are left out: the description marks its identifiers read-only, which
        # the validator then refuses in a path. Bodies and security are checked.
        for validator in (V30RequestBodyValidator, V30RequestSecurityValidator):
            validator(spec.spec, base_url=SERVER + "/client/v4").validate(request)
        if e.status < 400:
            response = MockResponse(
                e.response_body, status_code=e.status, content_type=e.content_type
            )
            spec.validate_response(request, response)
        else:
            # The description's 4XX schema is allOf(success, failure), which nothing can satisfy
            # (success is both true and false); the failure envelope is what Cloudflare sends.
            failure.validate(json.loads(e.response_body))


def test_the_spec_file_is_what_the_reference_names() -> None:
    assert Path(SPEC).name == "cloudflare-lb-openapi.json"
