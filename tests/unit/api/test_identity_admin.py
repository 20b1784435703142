"""Identity administration over HTTP: domains, projects, users, groups,
roles, grants, role assignments, password change, application credentials."""

from __future__ import annotations

from typing import Any

import httpx

from tests.unit.api.conftest import ApiHarness, auth_body

V3 = "/identity/v3"


async def _token(c: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    return await c.post(f"{V3}/auth/tokens", json=body)


async def _role_id(c: httpx.AsyncClient, name: str) -> str:
    r = await c.get(f"{V3}/roles", params={"name": name})
    (role,) = r.json()["roles"]
    return str(role["id"])


async def test_admin_creates_a_project_and_user_who_then_logs_in(api: ApiHarness) -> None:
    async with await api.login("admin") as c:
        r = await c.post(f"{V3}/projects", json={"project": {"name": "p1", "description": "d"}})
        assert r.status_code == 201, r.text
        project = r.json()["project"]
        assert project["domain_id"] == "default" and project["enabled"] is True
        r = await c.post(
            f"{V3}/users",
            json={
                "user": {
                    "name": "u1",
                    "password": "s3cret-pw",
                    "default_project_id": project["id"],
                    "email": "u1@example.org",
                }
            },
        )
        assert r.status_code == 201, r.text
        user = r.json()["user"]
        assert user["email"] == "u1@example.org" and "password" not in user
        # No role yet: a scoped token is refused.
        assert (await _token(c, auth_body("u1", "s3cret-pw", "p1"))).status_code == 401
        member = await _role_id(c, "member")
        url = f"{V3}/projects/{project['id']}/users/{user['id']}/roles/{member}"
        assert (await c.put(url)).status_code == 204
        assert (await c.head(url)).status_code == 204
        r = await c.get(f"{V3}/projects/{project['id']}/users/{user['id']}/roles")
        assert [x["name"] for x in r.json()["roles"]] == ["member"]
        r = await _token(c, auth_body("u1", "s3cret-pw", "p1"))
        assert r.status_code == 201
        assert {x["name"] for x in r.json()["token"]["roles"]} == {"member", "reader"}
        token = r.headers["X-Subject-Token"]
        # Taking the role away ends the session at once.
        assert (await c.delete(url)).status_code == 204
        assert (await c.head(url)).status_code == 404
    async with api.client(token) as u:
        assert (await u.get("/compute/v2.1/flavors")).status_code == 401


async def test_members_may_not_manage_the_directory(api: ApiHarness) -> None:
    async with await api.login("demo") as c:
        assert (await c.post(f"{V3}/projects", json={"project": {"name": "x"}})).status_code == 403
        r = await c.post(f"{V3}/users", json={"user": {"name": "x", "password": "y"}})
        assert r.status_code == 403
        assert r.json()["error"]["code"] == 403
        assert (await c.post(f"{V3}/roles", json={"role": {"name": "x"}})).status_code == 403
        assert (await c.get(f"{V3}/groups")).status_code == 403
        assert (await c.get(f"{V3}/role_assignments")).status_code == 403


async def test_bad_input_is_a_keystone_400_or_404_or_409(api: ApiHarness) -> None:
    async with await api.login("admin") as c:
        r = await c.post(f"{V3}/users", json={"user": {"password": "no name"}})
        assert r.status_code == 400 and r.json()["error"]["code"] == 400
        # An unknown domain is Keystone's 404, not a 400.
        r = await c.post(f"{V3}/users", json={"user": {"name": "x", "domain_id": "nope"}})
        assert r.status_code == 404
        r = await c.post(f"{V3}/projects", json={"project": {"name": "x" * 65}})
        assert r.status_code == 400
        r = await c.post(f"{V3}/projects", json={"project": {"name": "demo"}})
        assert r.status_code == 409
        assert (await c.get(f"{V3}/users/no-such-user")).status_code == 404
        assert (await c.patch(f"{V3}/projects/nope", json={"project": {}})).status_code == 404
        member = await _role_id(c, "member")
        r = await c.put(f"{V3}/projects/nope/users/nope/roles/{member}")
        assert r.status_code == 404


async def test_groups_give_their_members_roles(api: ApiHarness) -> None:
    async with await api.login("admin") as c:
        r = await c.post(f"{V3}/groups", json={"group": {"name": "ops"}})
        assert r.status_code == 201
        group = r.json()["group"]
        user = (
            await c.post(f"{V3}/users", json={"user": {"name": "g1", "password": "pw-g1"}})
        ).json()["user"]
        demo = (await c.get(f"{V3}/projects", params={"name": "demo"})).json()["projects"][0]
        reader = await _role_id(c, "reader")
        assert (await c.put(f"{V3}/groups/{group['id']}/users/{user['id']}")).status_code == 204
        assert (await c.head(f"{V3}/groups/{group['id']}/users/{user['id']}")).status_code == 204
        grant = f"{V3}/projects/{demo['id']}/groups/{group['id']}/roles/{reader}"
        assert (await c.put(grant)).status_code == 204
        r = await _token(c, auth_body("g1", "pw-g1", "demo"))
        assert r.status_code == 201
        assert [x["name"] for x in r.json()["token"]["roles"]] == ["reader"]
        # The effective listing expands the group into its member.
        r = await c.get(
            f"{V3}/role_assignments",
            params={"user.id": user["id"], "effective": "", "include_names": "1"},
        )
        (entry,) = r.json()["role_assignments"]
        assert entry["user"]["name"] == "g1" and entry["role"]["name"] == "reader"
        assert entry["scope"]["project"]["name"] == "demo"
        assert entry["links"]["membership"].endswith(f"/groups/{group['id']}/users/{user['id']}")
        # Leaving the group ends the role.
        assert (await c.delete(f"{V3}/groups/{group['id']}/users/{user['id']}")).status_code == 204
        assert (await _token(c, auth_body("g1", "pw-g1", "demo"))).status_code == 401


async def test_effective_assignments_show_implied_roles(api: ApiHarness) -> None:
    async with await api.login("admin") as c:
        admin = (await c.get(f"{V3}/users", params={"name": "admin"})).json()["users"][0]
        r = await c.get(
            f"{V3}/role_assignments", params={"user.id": admin["id"], "include_names": "true"}
        )
        direct = {
            (e["role"]["name"], e["scope"]["project"]["name"]) for e in r.json()["role_assignments"]
        }
        assert ("admin", "admin") in direct and ("reader", "admin") not in direct
        r = await c.get(
            f"{V3}/role_assignments",
            params={"user.id": admin["id"], "effective": "true", "include_names": "true"},
        )
        roles = {e["role"]["name"] for e in r.json()["role_assignments"]}
        assert {"admin", "manager", "member", "reader"} <= roles


async def test_password_change_needs_the_old_one_and_ends_sessions(api: ApiHarness) -> None:
    async with await api.login("admin") as c:
        user = (
            await c.post(f"{V3}/users", json={"user": {"name": "pw", "password": "old-pw"}})
        ).json()["user"]
    async with api.client() as c:
        token = (await _token(c, auth_body("pw", "old-pw", None))).headers["X-Subject-Token"]
    async with api.client(token) as c:
        url = f"{V3}/users/{user['id']}/password"
        bad = {"user": {"password": "new-pw", "original_password": "wrong"}}
        assert (await c.post(url, json=bad)).status_code == 401
        good = {"user": {"password": "new-pw", "original_password": "old-pw"}}
        assert (await c.post(url, json=good)).status_code == 204
        # The token that changed it is gone too (as in Keystone).
        assert (await c.get(f"{V3}/users/{user['id']}")).status_code == 401
    async with api.client() as c:
        assert (await _token(c, auth_body("pw", "old-pw", None))).status_code == 401
        assert (await _token(c, auth_body("pw", "new-pw", None))).status_code == 201


async def test_application_credential_lifecycle(api: ApiHarness) -> None:
    async with await api.login("demo") as c:
        me = (
            await c.get(f"{V3}/auth/tokens", headers={"X-Subject-Token": c.headers["X-Auth-Token"]})
        ).json()
        user_id = me["token"]["user"]["id"]
        url = f"{V3}/users/{user_id}/application_credentials"
        r = await c.post(url, json={"application_credential": {"name": "ci"}})
        assert r.status_code == 201, r.text
        cred = r.json()["application_credential"]
        assert cred["secret"] and cred["unrestricted"] is False
        assert {x["name"] for x in cred["roles"]} == {"member"}
        # A role the user does not hold cannot be delegated.
        r = await c.post(
            url, json={"application_credential": {"name": "x", "roles": [{"name": "admin"}]}}
        )
        assert r.status_code == 403
        listed = (await c.get(url)).json()["application_credentials"]
        assert [x["name"] for x in listed] == ["ci"] and "secret" not in listed[0]
    body = {
        "auth": {
            "identity": {
                "methods": ["application_credential"],
                "application_credential": {"id": cred["id"], "secret": cred["secret"]},
            }
        }
    }
    async with api.client() as c:
        r = await _token(c, body)
        assert r.status_code == 201, r.text
        token = r.json()["token"]
        assert token["project"]["name"] == "demo"
        assert token["application_credential"]["restricted"] is True
        cred_token = r.headers["X-Subject-Token"]
        wrong = {"auth": {"identity": {**body["auth"]["identity"]}}}
        wrong["auth"]["identity"]["application_credential"] = {"id": cred["id"], "secret": "no"}
        assert (await _token(c, wrong)).status_code == 401
    async with api.client(cred_token) as c:
        assert (await c.get("/compute/v2.1/flavors")).status_code == 200
        # Restricted: it cannot mint more.
        r = await c.post(
            f"{V3}/users/{user_id}/application_credentials",
            json={"application_credential": {"name": "more"}},
        )
        assert r.status_code == 403
    async with await api.login("demo") as c:
        assert (
            await c.delete(f"{V3}/users/{user_id}/application_credentials/{cred['id']}")
        ).status_code == 204
    async with api.client(cred_token) as c:
        assert (await c.get("/compute/v2.1/flavors")).status_code == 401


async def test_domains_and_default_roles_are_protected(api: ApiHarness) -> None:
    async with await api.login("admin") as c:
        r = await c.post(f"{V3}/domains", json={"domain": {"name": "d2"}})
        assert r.status_code == 201
        d2 = r.json()["domain"]
        r = await c.post(
            f"{V3}/users", json={"user": {"name": "in-d2", "password": "pw", "domain_id": d2["id"]}}
        )
        assert r.status_code == 201
        assert (await c.delete(f"{V3}/domains/{d2['id']}")).status_code == 403  # enabled
        r = await c.patch(f"{V3}/domains/{d2['id']}", json={"domain": {"enabled": False}})
        assert r.status_code == 200
        assert (await c.delete(f"{V3}/domains/{d2['id']}")).status_code == 204
        assert (await c.get(f"{V3}/users", params={"name": "in-d2"})).json()["users"] == []
        assert (await c.delete(f"{V3}/domains/default")).status_code == 403
        reader = await _role_id(c, "reader")
        assert (await c.delete(f"{V3}/roles/{reader}")).status_code == 403
        r = await c.post(f"{V3}/roles", json={"role": {"name": "auditor"}})
        assert r.status_code == 201
        assert (await c.delete(f"{V3}/roles/{r.json()['role']['id']}")).status_code == 204
