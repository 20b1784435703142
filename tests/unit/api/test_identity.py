"""Keystone v3 subset: password tokens with project scope, validation, revocation."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from sqlalchemy import update

from nubes.db.models import tokens
from tests.unit.api.conftest import PASSWORD, ApiHarness, auth_body


async def test_issue_project_scoped_token(api: ApiHarness) -> None:
    async with api.client() as c:
        r = await c.post("/identity/v3/auth/tokens", json=auth_body("admin", PASSWORD, "admin"))
    assert r.status_code == 201
    assert r.headers["X-Subject-Token"]
    token = r.json()["token"]
    assert token["user"]["name"] == "admin"
    assert token["project"]["name"] == "admin"
    assert {r["name"] for r in token["roles"]} == {"admin", "manager", "member", "reader"}
    assert token["expires_at"].endswith("Z") and token["issued_at"].endswith("Z")
    types = {s["type"]: s for s in token["catalog"]}
    assert set(types) == {"compute", "image", "identity", "network"}
    for service in types.values():
        for endpoint in service["endpoints"]:
            assert endpoint["region"] == endpoint["region_id"] == "RegionOne"
    compute_urls = {e["url"] for e in types["compute"]["endpoints"]}
    assert compute_urls == {"http://nubes.test/compute/v2.1"}


async def test_member_token_has_implied_reader(api: ApiHarness) -> None:
    async with api.client() as c:
        r = await c.post("/identity/v3/auth/tokens", json=auth_body("demo", PASSWORD, "demo"))
    assert {x["name"] for x in r.json()["token"]["roles"]} == {"member", "reader"}


async def test_unscoped_token_has_no_catalog(api: ApiHarness) -> None:
    body = auth_body("demo", PASSWORD, None)
    body["auth"]["scope"] = "unscoped"
    async with api.client() as c:
        r = await c.post("/identity/v3/auth/tokens", json=body)
    assert r.status_code == 201
    assert "catalog" not in r.json()["token"] and "project" not in r.json()["token"]


async def test_no_scope_means_the_default_project(api: ApiHarness) -> None:
    # Keystone scopes a password login that names no scope to the user's
    # default project when the user holds a role there.
    async with api.client() as c:
        r = await c.post("/identity/v3/auth/tokens", json=auth_body("demo", PASSWORD, None))
    assert r.status_code == 201
    token = r.json()["token"]
    assert token["project"]["name"] == "demo" and "catalog" in token


async def test_wrong_password_unknown_user_no_role_are_401(api: ApiHarness) -> None:
    async with api.client() as c:
        for body in (
            auth_body("demo", "wrong", "demo"),
            auth_body("nobody", PASSWORD, "demo"),
            auth_body("demo", PASSWORD, "admin"),
            auth_body("demo", PASSWORD, "no-such-project"),
        ):
            r = await c.post("/identity/v3/auth/tokens", json=body)
            assert r.status_code == 401
            assert r.json()["error"]["code"] == 401


async def test_bad_body_is_400(api: ApiHarness) -> None:
    async with api.client() as c:
        r = await c.post("/identity/v3/auth/tokens", json={"auth": {"identity": 3}})
        assert r.status_code == 400
        assert "identity" in r.json()["error"]["message"]


async def test_validate_and_revoke(api: ApiHarness) -> None:
    token = await api.token("demo")
    async with api.client(token) as c:
        r = await c.get("/identity/v3/auth/tokens", headers={"X-Subject-Token": token})
        assert r.status_code == 200 and r.json()["token"]["user"]["name"] == "demo"
        assert (await c.get("/compute/v2.1/flavors")).status_code == 200
        r = await c.delete("/identity/v3/auth/tokens", headers={"X-Subject-Token": token})
        assert r.status_code == 204
        assert (await c.get("/compute/v2.1/flavors")).status_code == 401


async def test_other_users_token_needs_admin(api: ApiHarness) -> None:
    admin_token, demo_token = await api.token("admin"), await api.token("demo")
    async with api.client(demo_token) as c:
        r = await c.get("/identity/v3/auth/tokens", headers={"X-Subject-Token": admin_token})
        assert r.status_code == 403
    async with api.client(admin_token) as c:
        r = await c.get("/identity/v3/auth/tokens", headers={"X-Subject-Token": demo_token})
        assert r.status_code == 200


async def test_expired_token_is_refused(api: ApiHarness) -> None:
    token = await api.token("demo")
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    async with api.state.db.writer() as conn:
        await conn.execute(update(tokens).values(expires_at=past))
    async with api.client(token) as c:
        assert (await c.get("/compute/v2.1/flavors")).status_code == 401


async def test_projects_listing(api: ApiHarness) -> None:
    async with await api.login("demo") as c:
        # A member lists its own projects (by name too); one it may not see is
        # Keystone's 403, so clients then take a given id as it is.
        r = await c.get("/identity/v3/projects", params={"name": "demo"})
        assert [p["name"] for p in r.json()["projects"]] == ["demo"]
        r = await c.get("/identity/v3/projects", params={"name": "admin"})
        assert r.status_code == 403
        # The whole listing is Keystone's 403 (Tempest's
        # test_list_projects_by_unauthorized_user).
        r = await c.get("/identity/v3/projects")
        assert r.status_code == 403
        assert r.json()["error"]["code"] == 403
        r = await c.get("/identity/v3/auth/projects")
        assert [p["name"] for p in r.json()["projects"]] == ["demo"]
        assert (await c.get("/identity/v3/users")).status_code == 403
    async with await api.login("admin") as c:
        names = {p["name"] for p in (await c.get("/identity/v3/projects")).json()["projects"]}
        assert {"admin", "demo", "other"} <= names


# --- a change of rights takes effect for existing tokens at once ---------------


async def _manage(api: ApiHarness, tmp_path: Path, *argv: str) -> int:
    """Run ``nubes-manage`` on the harness's database, as an operator would."""
    from nubes.cmd import manage

    conf = tmp_path / "manage.conf"
    conf.write_text(f"[database]\nconnection = {api.state.db.url.render_as_string()}\n")
    # Handlers run their own event loop, as under nubes-manage.
    return await asyncio.to_thread(manage.main, ["--config-file", str(conf), *argv])


async def test_user_demoted_from_admin_loses_admin_with_the_old_token(
    api: ApiHarness, tmp_path: Path
) -> None:
    token = await api.token("admin")
    async with api.client(token) as c:
        assert (await c.get("/compute/v2.1/os-hypervisors")).status_code == 200
        code = await _manage(
            api, tmp_path, "role", "remove", "admin", "--user", "admin", "--project", "admin"
        )
        assert code == 0
        r = await c.get("/compute/v2.1/os-hypervisors")
        assert r.status_code == 401, r.text
        flavor = {"flavor": {"name": "x", "ram": 64, "vcpus": 1, "disk": 1}}
        r = await c.post("/compute/v2.1/flavors", json=flavor)
        assert r.status_code == 401, r.text


async def test_disabled_or_deleted_user_and_disabled_project_lose_their_tokens(
    api: ApiHarness, tmp_path: Path
) -> None:
    demo, other = await api.token("demo"), await api.token("other")
    viewer = await api.token("viewer")

    async def answer(token: str) -> int:
        async with api.client(token) as c:
            return (await c.get("/compute/v2.1/flavors")).status_code

    assert {await answer(t) for t in (demo, other, viewer)} == {200}
    assert await _manage(api, tmp_path, "user", "set", "demo", "--disable") == 0
    assert await answer(demo) == 401
    assert await answer(viewer) == 200
    assert await _manage(api, tmp_path, "user", "set", "demo", "--enable") == 0
    # Enabling again does not bring a revoked token back.
    assert await answer(demo) == 401
    assert await _manage(api, tmp_path, "project", "set", "other", "--disable") == 0
    assert await answer(other) == 401
    assert await _manage(api, tmp_path, "user", "delete", "viewer") == 0
    assert await answer(viewer) == 401
    assert await _manage(api, tmp_path, "user", "delete", "viewer") == 1
