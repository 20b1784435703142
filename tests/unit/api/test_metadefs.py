"""Glance's metadata definitions catalog: namespaces, resource types,
objects, properties, tags and their schemas, with the negative cases."""

from __future__ import annotations

from typing import Any

import httpx

from tests.unit.api.conftest import ApiHarness

NS = "/image/v2/metadefs/namespaces"


async def _namespace(c: httpx.AsyncClient, name: str = "ns1", **body: Any) -> dict[str, Any]:
    r = await c.post(NS, json={"namespace": name, **body})
    assert r.status_code == 201, r.text
    return dict(r.json())


async def test_namespace_crud_protection_and_visibility(api: ApiHarness) -> None:
    async with await api.login("admin") as admin:
        made = await _namespace(
            admin,
            "OS::Test",
            display_name="Test",
            description="a test",
            visibility="public",
            protected=True,
            resource_type_associations=[{"name": "OS::Glance::Image", "prefix": "hw_"}],
        )
        assert made["visibility"] == "public" and made["protected"] is True
        assert made["self"] == "/v2/metadefs/namespaces/OS::Test"
        assert made["resource_type_associations"][0]["name"] == "OS::Glance::Image"
        assert made["resource_type_associations"][0]["prefix"] == "hw_"
        assert made["created_at"].endswith("Z")
        r = await admin.post(NS, json={"namespace": "OS::Test"})
        assert r.status_code == 409
        assert "namespace with name=OS::Test already exists" in r.json()["message"]
        for bad in (
            {},
            {"namespace": ""},
            {"namespace": "x", "visibility": "shared"},
            {"namespace": "x", "protected": "yes"},
            {"namespace": "x", "id": 1},
        ):
            assert (await admin.post(NS, json=bad)).status_code == 400, bad
        private = await _namespace(admin, "OS::Private")
        assert private["visibility"] == "private"
        # Protected: not deleted until unprotected.
        r = await admin.delete(f"{NS}/OS::Test")
        assert r.status_code == 403 and "protected" in r.json()["message"]
        update = {"namespace": "OS::Test", "visibility": "public", "protected": False}
        r = await admin.put(f"{NS}/OS::Test", json={**update, "description": "changed"})
        assert r.status_code == 200, r.text
        assert r.json()["protected"] is False and r.json()["description"] == "changed"
    async with await api.login("demo") as demo:
        names = [n["namespace"] for n in (await demo.get(NS)).json()["namespaces"]]
        assert "OS::Test" in names and "OS::Private" not in names
        assert (await demo.get(f"{NS}/OS::Private")).status_code == 404
        r = await demo.get(f"{NS}/OS::Nope")
        assert r.status_code == 404
        assert r.json()["message"] == "Metadata definition namespace=OS::Nope was not found."
        # Only admins write.
        assert (await demo.post(NS, json={"namespace": "mine"})).status_code == 403
        assert (await demo.put(f"{NS}/OS::Test", json=update)).status_code == 403
        assert (await demo.delete(f"{NS}/OS::Test")).status_code == 403
        listed = (await demo.get(NS, params={"resource_types": "OS::Glance::Image"})).json()
        assert [n["namespace"] for n in listed["namespaces"]] == ["OS::Test"]
        assert (await demo.get(NS, params={"visibility": "nope"})).status_code == 400
    async with await api.login("admin") as admin:
        listed = (
            await admin.get(NS, params={"limit": 1, "sort_key": "namespace", "sort_dir": "asc"})
        ).json()
        assert [n["namespace"] for n in listed["namespaces"]] == ["OS::Private"]
        assert "marker=OS%3A%3APrivate" in listed["next"]
        # Renamed, then deleted.
        r = await admin.put(f"{NS}/OS::Test", json={**update, "namespace": "OS::Renamed"})
        assert r.status_code == 200 and r.json()["namespace"] == "OS::Renamed"
        assert (await admin.get(f"{NS}/OS::Test")).status_code == 404
        assert (
            await admin.put(f"{NS}/OS::Renamed", json={**update, "namespace": "OS::Private"})
        ).status_code == 409
        assert (await admin.delete(f"{NS}/OS::Renamed")).status_code == 204
        assert (await admin.get(f"{NS}/OS::Renamed")).status_code == 404


async def test_resource_types_and_associations(api: ApiHarness) -> None:
    async with await api.login("demo") as demo:
        types = [
            t["name"]
            for t in (await demo.get("/image/v2/metadefs/resource_types")).json()["resource_types"]
        ]
        assert "OS::Glance::Image" in types and "OS::Nova::Flavor" in types
    async with await api.login("admin") as admin:
        await _namespace(admin, visibility="public")
        url = f"{NS}/ns1/resource_types"
        r = await admin.post(url, json={"name": "OS::Nova::Flavor", "properties_target": "x"})
        assert r.status_code == 201 and r.json()["name"] == "OS::Nova::Flavor"
        assert (await admin.post(url, json={"name": "OS::Nova::Flavor"})).status_code == 409
        assert (await admin.post(url, json={"nam": "typo"})).status_code == 400
        # A new name is a new resource type.
        assert (await admin.post(url, json={"name": "OS::Custom::Thing"})).status_code == 201
        listed = (await admin.get(url)).json()["resource_type_associations"]
        assert [a["name"] for a in listed] == ["OS::Nova::Flavor", "OS::Custom::Thing"]
        types = (await admin.get("/image/v2/metadefs/resource_types")).json()["resource_types"]
        assert "OS::Custom::Thing" in [t["name"] for t in types]
        assert (await admin.delete(f"{url}/OS::Nova::Flavor")).status_code == 204
        r = await admin.delete(f"{url}/OS::Nova::Flavor")
        assert r.status_code == 404 and "association" in r.json()["message"]
        assert (
            await admin.post(f"{NS}/nope/resource_types", json={"name": "a"})
        ).status_code == 404
    async with await api.login("demo") as demo:
        r = await demo.post(url, json={"name": "OS::Nova::Server"})
        assert r.status_code == 403


async def test_objects_and_properties(api: ApiHarness) -> None:
    prop = {"title": "Hypervisor", "type": "string", "enum": ["kvm", "qemu"]}
    async with await api.login("admin") as admin:
        await _namespace(admin, visibility="public", properties={"hv": prop})
        url = f"{NS}/ns1/properties"
        listed = (await admin.get(url)).json()["properties"]
        assert listed == {"hv": prop}
        r = await admin.post(
            url, json={"name": "hw_cpu", "title": "CPU", "type": "integer", "minimum": 1}
        )
        assert r.status_code == 201 and r.json() == {
            "name": "hw_cpu",
            "title": "CPU",
            "type": "integer",
            "minimum": 1,
        }
        assert (
            await admin.post(url, json={"name": "hw_cpu", "title": "t", "type": "string"})
        ).status_code == 409
        for bad in (
            {"name": "p"},
            {"name": "p", "title": "t", "type": "wrong"},
            {"name": "p", "title": "t", "type": "string", "nonsense": 1},
        ):
            assert (await admin.post(url, json=bad)).status_code == 400, bad
        r = await admin.put(
            f"{url}/hw_cpu", json={"name": "hw_cpus", "title": "CPUs", "type": "integer"}
        )
        assert r.status_code == 200 and r.json()["title"] == "CPUs"
        assert (await admin.get(f"{url}/hw_cpu")).status_code == 404
        assert (await admin.get(f"{url}/hw_cpus")).json()["name"] == "hw_cpus"
        assert (await admin.delete(f"{url}/hw_cpus")).status_code == 204
        r = await admin.delete(f"{url}/hw_cpus")
        assert r.status_code == 404
        assert r.json()["message"] == (
            "The metadata definition property with name=hw_cpus was not found in namespace=ns1."
        )
        # Objects.
        url = f"{NS}/ns1/objects"
        obj = {
            "name": "CPU Limits",
            "description": "limits",
            "required": ["quota"],
            "properties": {"quota": {"title": "Quota", "type": "integer"}},
        }
        r = await admin.post(url, json=obj)
        assert r.status_code == 201, r.text
        made = r.json()
        assert made["properties"] == obj["properties"] and made["required"] == ["quota"]
        assert made["schema"] == "/v2/schemas/metadefs/object"
        assert (await admin.post(url, json=obj)).status_code == 409
        assert (await admin.post(url, json={"description": "no name"})).status_code == 400
        r = await admin.put(f"{url}/CPU Limits", json={"name": "Limits"})
        assert r.status_code == 200 and r.json()["name"] == "Limits"
        assert r.json()["properties"] == {}
        shown = (await admin.get(f"{NS}/ns1")).json()
        assert [o["name"] for o in shown["objects"]] == ["Limits"]
        assert list(shown["properties"]) == ["hv"]
        assert [o["name"] for o in (await admin.get(url)).json()["objects"]] == ["Limits"]
        assert (await admin.delete(url)).status_code == 204
        assert (await admin.get(url)).json()["objects"] == []
    async with await api.login("demo") as demo:
        assert (await demo.get(f"{NS}/ns1/properties/hv")).json()["title"] == "Hypervisor"
        r = await demo.post(f"{NS}/ns1/properties", json={"name": "x", **prop})
        assert r.status_code == 403
        assert (await demo.delete(f"{NS}/ns1/properties/hv")).status_code == 403


async def test_tags_single_multiple_append_and_deletion_with_the_namespace(
    api: ApiHarness,
) -> None:
    async with await api.login("admin") as admin:
        await _namespace(admin, tags=[{"name": "old"}])
        url = f"{NS}/ns1/tags"
        body = {"tags": [{"name": "a"}, {"name": "b"}]}
        r = await admin.post(url, json=body)
        assert r.status_code == 201 and r.json() == body
        # Without the append header the body's tags replace the namespace's.
        assert [t["name"] for t in (await admin.get(url)).json()["tags"]] == ["a", "b"]
        r = await admin.post(
            url, json={"tags": [{"name": "c"}]}, headers={"X-Openstack-Append": "True"}
        )
        assert r.status_code == 201
        assert [t["name"] for t in (await admin.get(url)).json()["tags"]] == ["a", "b", "c"]
        r = await admin.post(
            url, json={"tags": [{"name": "a"}]}, headers={"X-Openstack-Append": "true"}
        )
        assert r.status_code == 409
        assert (
            await admin.post(url, json={"tags": [{"name": "d"}, {"name": "d"}]})
        ).status_code == 409
        assert [t["name"] for t in (await admin.get(url)).json()["tags"]] == ["a", "b", "c"]
        r = await admin.post(f"{url}/single")
        assert r.status_code == 201 and r.json()["name"] == "single"
        assert (await admin.post(f"{url}/single")).status_code == 409
        r = await admin.put(f"{url}/single", json={"name": "renamed"})
        assert r.status_code == 200 and r.json()["name"] == "renamed"
        assert (await admin.get(f"{url}/renamed")).status_code == 200
        assert (await admin.delete(f"{url}/renamed")).status_code == 204
        assert (await admin.delete(f"{url}/renamed")).status_code == 404
        assert (await admin.delete(url)).status_code == 204
        assert (await admin.get(url)).json()["tags"] == []
        # The namespace takes its contents with it.
        await admin.post(url, json={"tags": [{"name": "kept?"}]})
        assert (await admin.delete(f"{NS}/ns1")).status_code == 204
        await _namespace(admin)
        assert (await admin.get(url)).json()["tags"] == []


async def test_schemas_tempest_reads(api: ApiHarness) -> None:
    expected = {
        "namespace": "namespace",
        "namespaces": "namespaces",
        "resource_type": "resource_type_association",
        "resource_types": "resource_type_associations",
        "object": "object",
        "objects": "objects",
        "property": "property",
        "properties": "properties",
        "tag": "tag",
        "tags": "tags",
    }
    async with await api.login("viewer") as c:
        for kind, name in expected.items():
            r = await c.get(f"/image/v2/schemas/metadefs/{kind}")
            assert r.status_code == 200 and r.json()["name"] == name, kind
        assert (await c.get("/image/v2/schemas/metadefs/nothing")).status_code == 404
        namespace = (await c.get("/image/v2/schemas/metadefs/namespace")).json()
        assert namespace["properties"]["visibility"]["enum"] == ["public", "private"]
