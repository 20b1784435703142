"""``/v3/credentials`` over HTTP: blobs encrypted at rest, ec2 ids, who
sees what, and Keystone's refusals."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from nubes import config, exception
from nubes.api.identity import credential_keys
from tests.unit.api.conftest import ApiHarness

V3 = "/identity/v3"


async def _user_id(c: httpx.AsyncClient, name: str) -> str:
    return str((await c.get(f"{V3}/users", params={"name": name})).json()["users"][0]["id"])


async def _project_id(c: httpx.AsyncClient, name: str) -> str:
    r = await c.get(f"{V3}/projects", params={"name": name})
    return str(r.json()["projects"][0]["id"])


def _cred(user_id: str, blob: str, type_: str = "ec2", project: str | None = None) -> Any:
    body: dict[str, Any] = {"user_id": user_id, "blob": blob, "type": type_}
    if project:
        body["project_id"] = project
    return {"credential": body}


async def test_credential_lifecycle_and_encryption_at_rest(api: ApiHarness) -> None:
    async with await api.login("admin") as c:
        demo, project = await _user_id(c, "demo"), await _project_id(c, "demo")
    blob = json.dumps({"access": "AK1", "secret": "very-secret-value"})
    async with await api.login("demo") as c:
        r = await c.post(f"{V3}/credentials", json=_cred(demo, blob, project=project))
        assert r.status_code == 201, r.text
        cred = r.json()["credential"]
        assert cred["id"] == hashlib.sha256(b"AK1").hexdigest()
        assert cred["blob"] == blob and cred["project_id"] == project
        assert cred["links"]["self"].endswith(f"/v3/credentials/{cred['id']}")
        # The same access key again is a conflict (its id is taken).
        assert (
            await c.post(f"{V3}/credentials", json=_cred(demo, blob, project=project))
        ).status_code == 409
        totp = (await c.post(f"{V3}/credentials", json=_cred(demo, "SEED", "totp"))).json()
        new_blob = json.dumps({"access": "AK2", "secret": "s2"})
        r = await c.patch(f"{V3}/credentials/{cred['id']}", json={"credential": {"blob": new_blob}})
        assert r.status_code == 200 and r.json()["credential"]["id"] == cred["id"]
        shown = (await c.get(f"{V3}/credentials/{cred['id']}")).json()["credential"]
        assert shown["blob"] == new_blob
        only_totp = (await c.get(f"{V3}/credentials", params={"type": "totp"})).json()
        assert [x["id"] for x in only_totp["credentials"]] == [totp["credential"]["id"]]
    # At rest: no clear text, and the key that encrypted it is the repository's.
    async with api.state.db.reader() as conn:
        stored = (
            await conn.execute(
                text("SELECT encrypted_blob, key_hash FROM credentials WHERE id = :i"),
                {"i": cred["id"]},
            )
        ).one()
    assert "s2" not in stored[0] and "AK2" not in stored[0]
    keys = credential_keys.load(api.state.conf)
    assert stored[1] == credential_keys.key_hash(keys.keys[0])
    assert keys.decrypt(stored[0], stored[1]) == new_blob
    async with await api.login("demo") as c:
        assert (await c.delete(f"{V3}/credentials/{cred['id']}")).status_code == 204
        assert (await c.get(f"{V3}/credentials/{cred['id']}")).status_code == 404


async def test_users_see_their_own_and_admins_all(api: ApiHarness) -> None:
    async with await api.login("admin") as c:
        demo, other = await _user_id(c, "demo"), await _user_id(c, "other")
        admin_made = (await c.post(f"{V3}/credentials", json=_cred(other, "C", "cert"))).json()
        assert admin_made["credential"]["user_id"] == other
    async with await api.login("demo") as c:
        mine = (await c.post(f"{V3}/credentials", json=_cred(demo, "M", "cert"))).json()
        # Not for someone else, not someone else's.
        assert (
            await c.post(f"{V3}/credentials", json=_cred(other, "X", "cert"))
        ).status_code == 403
        their = admin_made["credential"]["id"]
        assert (await c.get(f"{V3}/credentials/{their}")).status_code == 403
        assert (await c.delete(f"{V3}/credentials/{their}")).status_code == 403
        listed = (await c.get(f"{V3}/credentials")).json()["credentials"]
        assert [x["id"] for x in listed] == [mine["credential"]["id"]]
        listed = (await c.get(f"{V3}/credentials", params={"user_id": other})).json()
        assert listed["credentials"] == []
    async with await api.login("admin") as c:
        listed = (await c.get(f"{V3}/credentials", params={"user_id": other})).json()
        assert [x["id"] for x in listed["credentials"]] == [their]
        # Deleting the user deletes its credentials.
        assert (await c.delete(f"{V3}/users/{other}")).status_code == 204
        assert (await c.get(f"{V3}/credentials/{their}")).status_code == 404


async def test_bad_credentials_are_refused(api: ApiHarness) -> None:
    async with await api.login("admin") as c:
        demo, project = await _user_id(c, "demo"), await _project_id(c, "demo")
        url = f"{V3}/credentials"
        # ec2 needs a project and a JSON blob with an access key.
        assert (await c.post(url, json=_cred(demo, '{"access": "a"}'))).status_code == 400
        for blob in ("not json", '{"secret": "s"}', '["access"]'):
            r = await c.post(url, json=_cred(demo, blob, project=project))
            assert r.status_code == 400, blob
        assert (await c.post(url, json={"credential": {"type": "cert"}})).status_code == 400
        assert (await c.post(url, json=_cred("nobody", "b", "cert"))).status_code == 404
        r = await c.post(url, json=_cred(demo, "b", "cert", project="nowhere"))
        assert r.status_code == 404
        cred = (await c.post(url, json=_cred(demo, "b", "cert"))).json()["credential"]
        # Only the blob changes.
        r = await c.patch(f"{url}/{cred['id']}", json={"credential": {"type": "totp"}})
        assert r.status_code == 400
        r = await c.patch(f"{url}/{cred['id']}", json={"credential": {"blob": "b", "user_id": "x"}})
        assert r.status_code == 400
        assert (await c.patch(f"{url}/nope", json={"credential": {"blob": "b"}})).status_code == 404
        async with api.state.db.reader() as conn:
            count = (await conn.execute(text("SELECT COUNT(*) FROM credentials"))).scalar()
        assert count == 1


def test_key_repository_is_made_once_and_rotates(tmp_path: Any) -> None:
    conf = config.new_config()
    conf.set_override("state_path", str(tmp_path))
    first = credential_keys.load(conf)
    assert credential_keys.load(conf) == first
    assert (tmp_path / "credential-keys" / "0").stat().st_mode & 0o077 == 0
    token, hashed = first.encrypt("blob")
    # A higher-numbered key encrypts from now on; the old one still decrypts.
    (tmp_path / "credential-keys" / "1").write_bytes(credential_keys.Fernet.generate_key())
    rotated = credential_keys.load(conf)
    assert rotated.decrypt(token, hashed) == "blob"
    assert rotated.encrypt("x")[1] != hashed
    # A configured repository without keys is a configuration error.
    conf.set_override("key_repository", str(tmp_path / "empty"), group="credential")
    with pytest.raises(exception.ConfigError):
        credential_keys.load(conf)
