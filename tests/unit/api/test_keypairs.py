"""os-keypairs: generate, import, list (paged), show, delete, per user, per microversion."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from nubes.api import keypairs
from tests.unit.api.conftest import ApiHarness
from tests.unit.api.test_servers import body, cloud, login  # noqa: F401  (fixture)

URL = "/compute/v2.1/os-keypairs"


async def test_generate_import_show_delete(api: ApiHarness) -> None:
    async with await api.login("demo", "2.2") as c:
        r = await c.post(URL, json={"keypair": {"name": "gen"}})
        assert r.status_code == 201, r.text
        made = r.json()["keypair"]
        assert made["type"] == "ssh" and made["user_id"]
        private = serialization.load_pem_private_key(made["private_key"].encode(), None)
        public = private.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        assert made["public_key"].startswith(public.decode())
        assert made["fingerprint"] == keypairs.ssh_fingerprint(made["public_key"])
        # The private key is given once: show has none.
        shown = (await c.get(f"{URL}/gen")).json()["keypair"]
        assert "private_key" not in shown and shown["fingerprint"] == made["fingerprint"]
        r = await c.post(
            URL, json={"keypair": {"name": "imported", "public_key": made["public_key"]}}
        )
        assert r.status_code == 201 and "private_key" not in r.json()["keypair"]
        r = await c.post(URL, json={"keypair": {"name": "cert", "type": "x509"}})
        assert r.status_code == 201, r.text
        cert = r.json()["keypair"]
        x509.load_pem_x509_certificate(cert["public_key"].encode())
        assert len(cert["fingerprint"].split(":")) == 20
        names = [k["keypair"]["name"] for k in (await c.get(URL)).json()["keypairs"]]
        assert names == ["cert", "gen", "imported"]
        r = await c.post(URL, json={"keypair": {"name": "gen"}})
        assert (
            r.status_code == 409 and "already exists" in r.json()["conflictingRequest"]["message"]
        )
        assert (await c.delete(f"{URL}/gen")).status_code == 204
        r = await c.get(f"{URL}/gen")
        assert r.status_code == 404 and "itemNotFound" in r.json()
    # Per user: another user sees none of them.
    async with await api.login("other") as c:
        assert (await c.get(URL)).json()["keypairs"] == []
        assert (await c.get(f"{URL}/imported")).status_code == 404


async def test_microversions(api: ApiHarness) -> None:
    async with await api.login("demo") as c:
        r = await c.post(URL, json={"keypair": {"name": "old"}})
        assert r.status_code == 200 and "type" not in r.json()["keypair"]
        r = await c.post(URL, json={"keypair": {"name": "typed", "type": "ssh"}})
        assert r.status_code == 400  # type arrives at 2.2
        assert (await c.delete(f"{URL}/old")).status_code == 202
    async with await api.login("demo", "2.35") as c:
        for n in range(3):
            await c.post(URL, json={"keypair": {"name": f"k{n}"}})
        page = (await c.get(URL, params={"limit": 2})).json()
        assert [k["keypair"]["name"] for k in page["keypairs"]] == ["k0", "k1"]
        assert "marker=k1" in page["keypairs_links"][0]["href"]
        rest = (await c.get(URL, params={"limit": 2, "marker": "k1"})).json()
        assert [k["keypair"]["name"] for k in rest["keypairs"]] == ["k2"]
        assert (await c.get(URL, params={"marker": "nope"})).status_code == 400
        # Only an admin acts for another user (2.10).
        r = await c.post(URL, json={"keypair": {"name": "x", "user_id": "someone"}})
        assert r.status_code == 403
    async with await api.login("admin", "2.10") as c:
        r = await c.post(URL, json={"keypair": {"name": "for-other", "user_id": "u-else"}})
        assert r.status_code == 201 and r.json()["keypair"]["user_id"] == "u-else"
        r = await c.get(URL, params={"user_id": "u-else"})
        assert [k["keypair"]["name"] for k in r.json()["keypairs"]] == ["for-other"]
        assert (await c.delete(f"{URL}/for-other", params={"user_id": "u-else"})).status_code == 204


@pytest.mark.parametrize(
    "spec",
    [
        {"name": ""},
        {"name": " lead"},
        {"name": "bad/char"},
        {"name": "k", "public_key": "ssh-rsa not-base64!"},
        {"name": "k", "public_key": "garbage"},
        {"name": "k", "type": "x509", "public_key": "-----BEGIN CERTIFICATE-----\nxx"},
        {"name": "k", "type": "pgp"},
        {"name": "k", "extra": 1},
    ],
)
async def test_bad_input_is_400(api: ApiHarness, spec: dict[str, str]) -> None:
    async with await api.login("demo", "2.2") as c:
        r = await c.post(URL, json={"keypair": spec})
        assert r.status_code == 400, r.text
        assert "badRequest" in r.json()


async def test_quota_per_user(api: ApiHarness) -> None:
    api.state.conf.set_override("key_pairs", 2, group="quota")
    async with await api.login("demo") as c:
        for n in range(2):
            assert (await c.post(URL, json={"keypair": {"name": f"q{n}"}})).status_code == 200
        r = await c.post(URL, json={"keypair": {"name": "q3"}})
        assert r.status_code == 403 and "key pairs" in r.json()["forbidden"]["message"]


async def test_server_key_name(cloud: ApiHarness) -> None:  # noqa: F811
    async with await login(cloud, "demo", "2.2") as c:
        await c.post(URL, json={"keypair": {"name": "mine"}})
        r = await c.post("/compute/v2.1/servers", json=body(cloud, key_name="nope"))
        assert r.status_code == 400 and "Invalid key_name" in r.text
        r = await c.post("/compute/v2.1/servers", json=body(cloud, key_name="mine"))
        assert r.status_code == 202, r.text
        server_id = r.json()["server"]["id"]
        shown = (await c.get(f"/compute/v2.1/servers/{server_id}")).json()["server"]
        assert shown["key_name"] == "mine"
    async with await login(cloud, "other") as c:
        # Another user's key pair is not the caller's.
        r = await c.post("/compute/v2.1/servers", json=body(cloud, key_name="mine"))
        assert r.status_code == 400
