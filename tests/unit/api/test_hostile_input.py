"""What the fuzzer found: each malformed request gets a clear 4xx in its
service's JSON shape, never a 5xx or a plain-text page."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from starlette.routing import Route

from nubes.api import validation
from nubes.api.app import build_app
from tests.unit.api.conftest import PASSWORD, ApiHarness, auth_body

FLAVOR = b'{"flavor": {"name": "f", "ram": 64, "vcpus": 1, "disk": 1, "rxtx_factor": %s}}'


async def _post(api: ApiHarness, path: str, body: bytes, token: str | None = None) -> Any:
    async with api.client(token) as c:
        return await c.post(path, content=body, headers={"Content-Type": "application/json"})


def _message(service: str, body: dict[str, Any]) -> str:
    if service == "compute":
        (fault,) = body.values()
        assert fault["code"] == 400
        return str(fault["message"])
    if service == "identity":
        return str(body["error"]["message"])
    return str(body["message"])


@pytest.mark.parametrize("service", ["compute", "identity", "image"])
async def test_lone_surrogate_in_a_string_field_is_a_400_that_does_not_echo_it(
    api: ApiHarness, service: str
) -> None:
    admin = await api.token("admin")
    path, body = {
        "compute": ("/compute/v2.1/flavors", FLAVOR.replace(b'"f"', b'"\\ud800"') % b"1.0"),
        "identity": (
            "/identity/v3/auth/tokens",
            json.dumps(auth_body("\ud800", PASSWORD, "demo")).encode(),
        ),
        "image": ("/image/v2/images", b'{"name": "x\\udfffy"}'),
    }[service]
    assert b"\\ud" in body  # the escape as a client sends it
    r = await _post(api, path, body, admin)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/json")
    message = _message(service, r.json())
    assert "unpaired surrogate" in message
    message.encode("utf-8")  # nothing undecodable echoed


async def test_json_nested_100000_levels_deep_is_a_400(api: ApiHarness) -> None:
    admin = await api.token("admin")
    for body in (b"[" * 100_000 + b"]" * 100_000, b'{"flavor": ' + b"[" * 100_000):
        r = await _post(api, "/compute/v2.1/flavors", body, admin)
        assert r.status_code == 400, r.text
        assert "nested deeper than" in r.json()["badRequest"]["message"]
    # Within the parser's reach but past the bound: refused all the same.
    deep = b"[" * (validation.MAX_BODY_DEPTH + 1) + b"]" * (validation.MAX_BODY_DEPTH + 1)
    r = await _post(api, "/compute/v2.1/flavors", deep, admin)
    assert r.status_code == 400, r.text


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
async def test_nan_or_infinity_in_rxtx_factor_is_a_400_and_no_flavor(
    api: ApiHarness, number: bytes
) -> None:
    admin = await api.token("admin")
    r = await _post(api, "/compute/v2.1/flavors", FLAVOR % number, admin)
    assert r.status_code == 400, r.text
    async with api.client(admin) as c:
        flavors = (await c.get("/compute/v2.1/flavors")).json()["flavors"]
    assert "f" not in {f["name"] for f in flavors}


async def test_a_body_over_the_size_limit_is_a_413(api: ApiHarness) -> None:
    admin = await api.token("admin")
    body = b'{"flavor": {"name": "' + b"x" * validation.MAX_BODY_BYTES + b'"}}'
    r = await _post(api, "/compute/v2.1/flavors", body, admin)
    assert r.status_code == 413, r.text
    assert r.json() == {"overLimit": {"code": 413, "message": "Request is too large."}}


async def test_an_unknown_route_says_which_route_is_not_supported(api: ApiHarness) -> None:
    admin = await api.token("admin")
    async with api.client(admin) as c:
        r = await c.get("/compute/v2.1/os-foo")
        assert r.status_code == 404
        assert r.json() == {
            "itemNotFound": {
                "code": 404,
                "message": "The resource could not be found: "
                "GET /compute/v2.1/os-foo is not a supported route",
            }
        }
        r = await c.get("/identity/v3/nope")
        assert r.status_code == 404
        assert "GET /identity/v3/nope is not a supported route" in r.json()["error"]["message"]
        r = await c.get("/nothing-here")
        assert r.status_code == 404 and r.headers["content-type"] == "application/json"
        r = await c.patch("/compute/v2.1/flavors")
        assert r.status_code == 405
        assert "PATCH /compute/v2.1/flavors" in r.json()["badMethod"]["message"]


async def test_an_unknown_server_action_names_the_action(api: ApiHarness) -> None:
    admin = await api.token("admin")
    r = await _post(
        api,
        "/compute/v2.1/servers/00000000-0000-0000-0000-000000000000/action",
        b'{"foo": null}',
        admin,
    )
    assert r.status_code == 400
    assert r.json() == {"badRequest": {"code": 400, "message": "There is no such action: foo"}}


async def test_a_microversion_of_non_ascii_or_endless_digits_is_a_400(api: ApiHarness) -> None:
    admin = await api.token("admin")
    for version in ("compute ٢.١".encode(), b"compute 2." + b"9" * 5000):
        async with api.client(admin) as c:
            r = await c.get("/compute/v2.1/flavors", headers={"OpenStack-API-Version": version})
        assert r.status_code == 400, r.text
        assert len(r.json()["badRequest"]["message"]) < 200


async def test_an_error_that_escapes_a_service_is_a_json_500(api: ApiHarness) -> None:
    async def broken(request: Any) -> Any:
        raise RuntimeError("boom")

    app = build_app(api.state, compute_routes=[Route("/broken", broken)])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://nubes.test"
    ) as c:
        token = await api.token("admin")
        r = await c.get("/compute/v2.1/broken", headers={"X-Auth-Token": token})
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/json"
    assert r.json()["computeFault"]["code"] == 500
