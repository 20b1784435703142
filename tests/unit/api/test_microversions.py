"""Version documents, microversion negotiation, request ids, error shapes."""

from __future__ import annotations

from nubes.api import microversion
from tests.unit.api.conftest import ApiHarness


async def test_version_documents_need_no_token(api: ApiHarness) -> None:
    async with api.client() as c:
        for path in ("/compute", "/compute/"):
            r = await c.get(path)
            assert r.status_code == 200
            doc = r.json()["versions"][-1]
            assert doc["id"] == "v2.1" and doc["min_version"] == "2.1"
            assert doc["version"] == microversion.MAX_VERSION
        for path in ("/compute/v2.1", "/compute/v2.1/"):
            r = await c.get(path)
            assert r.status_code == 200
            assert r.json()["version"]["media-types"][0]["base"] == "application/json"
        r = await c.get("/identity")
        assert r.status_code == 300 and r.json()["versions"]["values"][0]["id"].startswith("v3")
        assert (await c.get("/identity/v3")).json()["version"]["status"] == "stable"
        r = await c.get("/image")
        assert r.status_code == 300 and r.json()["versions"][0]["status"] == "CURRENT"


async def test_every_response_has_a_request_id(api: ApiHarness) -> None:
    async with api.client() as c:
        for path in ("/compute", "/compute/v2.1/flavors", "/identity", "/image/v2/images", "/nope"):
            r = await c.get(path)
            assert r.headers["x-openstack-request-id"].startswith("req-"), path


async def test_no_token_is_401_in_nova_shape(api: ApiHarness) -> None:
    async with api.client() as c:
        r = await c.get("/compute/v2.1/flavors")
    assert r.status_code == 401
    assert r.json()["unauthorized"]["code"] == 401
    assert "www-authenticate" in r.headers


async def test_bad_token_is_401(api: ApiHarness) -> None:
    async with api.client("not-a-token") as c:
        assert (await c.get("/compute/v2.1/flavors")).status_code == 401
        r = await c.get("/image/v2/images")
        assert r.status_code == 401 and r.json()["code"] == 401


async def test_negotiation(api: ApiHarness) -> None:
    token = await api.token("demo")
    cases = {
        None: "2.1",
        "compute 2.1": "2.1",
        "compute 2.53": "2.53",
        "compute latest": microversion.MAX_VERSION,
        f"compute {microversion.MAX_VERSION}": microversion.MAX_VERSION,
    }
    for header, expected in cases.items():
        headers = {"X-Auth-Token": token}
        if header:
            headers["OpenStack-API-Version"] = header
        async with api.client() as c:
            r = await c.get("/compute/v2.1/flavors", headers=headers)
        assert r.status_code == 200
        assert r.headers["openstack-api-version"] == f"compute {expected}"
        assert r.headers["x-openstack-nova-api-version"] == expected
        assert "OpenStack-API-Version" in r.headers["vary"]
        assert "X-OpenStack-Nova-API-Version" in r.headers["vary"]


async def test_legacy_header(api: ApiHarness) -> None:
    async with await api.login("demo") as c:
        r = await c.get("/compute/v2.1/flavors", headers={"X-OpenStack-Nova-API-Version": "2.55"})
    assert r.headers["x-openstack-nova-api-version"] == "2.55"
    assert "description" in r.json()["flavors"][0] if r.json()["flavors"] else True


async def test_out_of_range_is_406_and_garbage_400(api: ApiHarness) -> None:
    async with await api.login("demo") as c:
        for bad in ("2.0", "3.0", "2.999", "1.1"):
            r = await c.get(
                "/compute/v2.1/flavors", headers={"OpenStack-API-Version": f"compute {bad}"}
            )
            assert r.status_code == 406, bad
            assert r.json()["computeFault"]["code"] == 406
        for bad in ("abc", "2.01", "2", "2.x"):
            r = await c.get(
                "/compute/v2.1/flavors", headers={"OpenStack-API-Version": f"compute {bad}"}
            )
            assert r.status_code == 400, bad
            assert r.json()["badRequest"]["code"] == 400


async def test_unknown_path_and_method(api: ApiHarness) -> None:
    async with await api.login("admin") as c:
        r = await c.get("/compute/v2.1/nope")
        assert r.status_code == 404 and "itemNotFound" in r.json()
        r = await c.patch("/compute/v2.1/flavors")
        assert r.status_code == 405 and "badMethod" in r.json()


async def test_malformed_json_is_400(api: ApiHarness) -> None:
    async with await api.login("admin") as c:
        r = await c.post("/compute/v2.1/flavors", content=b"{not json")
    assert r.status_code == 400 and "badRequest" in r.json()


async def test_versions_list_v20_and_v21_and_v2_serves_the_first_version(api: ApiHarness) -> None:
    async with api.client() as c:
        r = await c.get("/compute/")
        v20, v21 = r.json()["versions"]
        assert (v20["id"], v20["status"], v20["version"]) == ("v2.0", "SUPPORTED", "")
        assert (v21["id"], v21["status"]) == ("v2.1", "CURRENT")
        # Each listed self link answers its own document with the same self link.
        for listed in (v20, v21):
            (self_link,) = [x for x in listed["links"] if x["rel"] == "self"]
            path = self_link["href"].split("://", 1)[1].split("/", 1)[1]
            doc = (await c.get("/" + path)).json()["version"]
            assert doc["id"] == listed["id"]
            assert [x for x in doc["links"] if x["rel"] == "self"] == [self_link]
    client = await api.login("demo")
    async with client as c:
        # /v2 is the same API at 2.1 whatever the client asks, and names no version.
        r = await c.get("/compute/v2/flavors", headers={"OpenStack-API-Version": "compute 2.61"})
        assert r.status_code == 200 and "openstack-api-version" not in r.headers
        assert all("extra_specs" not in f for f in r.json()["flavors"])
        headers = {"OpenStack-API-Version": "compute 2.61"}
        r = await c.get("/compute/v2.1/flavors/detail", headers=headers)
        assert all("extra_specs" in f for f in r.json()["flavors"])


async def test_extensions_list_and_show(api: ApiHarness) -> None:
    client = await api.login("viewer")
    async with client as c:
        r = await c.get("/compute/v2.1/extensions")
        assert r.status_code == 200
        names = {e["name"]: e for e in r.json()["extensions"]}
        assert names["Hosts"]["alias"] == "os-hosts"
        fields = {"alias", "name", "description", "namespace", "updated", "links"}
        assert set(names["Hosts"]) == fields
        r = await c.get("/compute/v2.1/extensions/os-keypairs")
        assert r.status_code == 200 and r.json()["extension"]["name"] == "Keypairs"
        r = await c.get("/compute/v2.1/extensions/os-no-such")
        assert r.status_code == 404 and "os-no-such" in r.json()["itemNotFound"]["message"]


async def test_a_trailing_slash_is_not_found_not_redirected(api: ApiHarness) -> None:
    client = await api.login("admin", "2.35")
    async with client as c:
        r = await c.get("/compute/v2.1/os-simple-tenant-usage/")
        assert r.status_code == 404 and "itemNotFound" in r.json()
        assert (await c.delete("/compute/v2.1/os-security-groups/")).status_code == 404
        # The version document keeps its slash.
        assert (await c.get("/compute/v2.1/")).status_code == 200
