"""Identity v3 domains: names unique per domain, logins resolved inside a
domain, domain- and system-scoped tokens, rescoping, and Keystone's domain
manager persona."""

from __future__ import annotations

from typing import Any

import httpx

from tests.unit.api.conftest import PASSWORD, ApiHarness, auth_body

V3 = "/identity/v3"


def _login(user: str, password: str, user_domain: str, scope: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": user, "domain": {"name": user_domain}, "password": password}
                },
            }
        }
    }
    if scope is not None:
        body["auth"]["scope"] = scope
    return body


async def _token(c: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    return await c.post(f"{V3}/auth/tokens", json=body)


async def _role_id(c: httpx.AsyncClient, name: str) -> str:
    (role,) = (await c.get(f"{V3}/roles", params={"name": name})).json()["roles"]
    return str(role["id"])


async def _create(c: httpx.AsyncClient, kind: str, **ref: Any) -> dict[str, Any]:
    r = await c.post(f"{V3}/{kind}s", json={kind: ref})
    assert r.status_code == 201, r.text
    return dict(r.json()[kind])


async def test_names_are_unique_per_domain_and_logins_resolve_inside_it(api: ApiHarness) -> None:
    async with await api.login("admin") as c:
        d1 = await _create(c, "domain", name="d1")
        # "demo" exists in the default domain; another domain may have one too.
        p1 = await _create(c, "project", name="demo", domain_id=d1["id"])
        assert p1["domain_id"] == d1["id"]
        r = await c.post(
            f"{V3}/projects", json={"project": {"name": "demo", "domain_id": d1["id"]}}
        )
        assert r.status_code == 409
        u_default = await _create(c, "user", name="alice", password="pw-default")
        u_d1 = await _create(c, "user", name="alice", password="pw-d1", domain_id=d1["id"])
        r = await c.post(
            f"{V3}/users", json={"user": {"name": "alice", "password": "x", "domain_id": d1["id"]}}
        )
        assert r.status_code == 409
        listed = (
            await c.get(f"{V3}/users", params={"name": "alice", "domain_id": d1["id"]})
        ).json()
        assert [u["id"] for u in listed["users"]] == [u_d1["id"]]
        projects = (await c.get(f"{V3}/projects", params={"domain_id": d1["id"]})).json()
        assert [p["id"] for p in projects["projects"]] == [p1["id"]]
        member = await _role_id(c, "member")
        demo = await c.get(f"{V3}/projects", params={"name": "demo", "domain_id": "default"})
        demo_id = demo.json()["projects"][0]["id"]
        assert (
            await c.put(f"{V3}/projects/{p1['id']}/users/{u_d1['id']}/roles/{member}")
        ).is_success
        assert (
            await c.put(f"{V3}/projects/{demo_id}/users/{u_default['id']}/roles/{member}")
        ).is_success
    async with api.client() as c:
        # Same names, two domains: each login reaches its own user and project.
        scope_d1 = {"project": {"name": "demo", "domain": {"name": "d1"}}}
        r = await _token(c, _login("alice", "pw-d1", "d1", scope_d1))
        assert r.status_code == 201, r.text
        token = r.json()["token"]
        assert token["user"]["id"] == u_d1["id"] and token["project"]["id"] == p1["id"]
        assert token["user"]["domain"] == {"id": d1["id"], "name": "d1"}
        scope_default = {"project": {"name": "demo", "domain": {"id": "default"}}}
        r = await _token(c, _login("alice", "pw-default", "Default", scope_default))
        assert r.json()["token"]["project"]["id"] == demo_id
        # The other domain's password does not open this domain's user.
        assert (await _token(c, _login("alice", "pw-default", "d1", scope_d1))).status_code == 401
        # Default's alice has no role on d1's demo.
        r = await _token(c, _login("alice", "pw-default", "Default", scope_d1))
        assert r.status_code == 401
        assert (await _token(c, _login("alice", "pw-d1", "no-such-domain"))).status_code == 401
    async with await api.login("admin") as c:
        # A disabled domain's users cannot log in.
        r = await c.patch(f"{V3}/domains/{d1['id']}", json={"domain": {"enabled": False}})
        assert r.status_code == 200
    async with api.client() as c:
        assert (await _token(c, _login("alice", "pw-d1", "d1", scope_d1))).status_code == 401


async def test_domain_scoped_token_from_a_group_grant(api: ApiHarness) -> None:
    async with await api.login("admin") as c:
        d = await _create(c, "domain", name="dg")
        user = await _create(c, "user", name="dg-user", password="pw", domain_id=d["id"])
        group = await _create(c, "group", name="dg-admins", domain_id=d["id"])
        r = await c.post(
            f"{V3}/groups", json={"group": {"name": "dg-admins", "domain_id": d["id"]}}
        )
        assert r.status_code == 409
        reader = await _role_id(c, "reader")
        assert (await c.put(f"{V3}/groups/{group['id']}/users/{user['id']}")).status_code == 204
        assert (
            await c.put(f"{V3}/domains/{d['id']}/groups/{group['id']}/roles/{reader}")
        ).is_success
        r = await c.get(
            f"{V3}/role_assignments",
            params={"scope.domain.id": d["id"], "effective": "1", "include_names": "1"},
        )
        (entry,) = r.json()["role_assignments"]
        assert entry["scope"]["domain"]["name"] == "dg" and entry["user"]["name"] == "dg-user"
        assert entry["links"]["membership"].endswith(f"/groups/{group['id']}/users/{user['id']}")
    async with api.client() as c:
        scope = {"domain": {"name": "dg"}}
        r = await _token(c, _login("dg-user", "pw", "dg", scope))
        assert r.status_code == 201, r.text
        token = r.json()["token"]
        assert token["domain"] == {"id": d["id"], "name": "dg"} and "project" not in token
        assert [x["name"] for x in token["roles"]] == ["reader"] and token["catalog"]
        text = r.headers["X-Subject-Token"]
        # No role on another domain: no token for it.
        r = await _token(c, _login("dg-user", "pw", "dg", {"domain": {"id": "default"}}))
        assert r.status_code == 401
    async with api.client(text) as c:
        r = await c.get(f"{V3}/auth/domains")
        assert [x["id"] for x in r.json()["domains"]] == [d["id"]]
        shown = await c.get(f"{V3}/auth/tokens", headers={"X-Subject-Token": text})
        assert shown.json()["token"]["domain"]["id"] == d["id"]
        # Compute works in projects: a domain-scoped token is refused there.
        assert (await c.get("/compute/v2.1/flavors")).status_code == 403
        assert (await c.get("/image/v2/images")).status_code == 403
    async with await api.login("admin") as c:
        assert (await c.delete(f"{V3}/groups/{group['id']}/users/{user['id']}")).status_code == 204
    async with api.client(text) as c:
        # Leaving the group takes the role, and the token that carried it, away.
        assert (await c.get(f"{V3}/auth/domains")).status_code == 401


async def test_domain_manager_manages_its_domain_only(api: ApiHarness) -> None:
    async with await api.login("admin") as c:
        d = await _create(c, "domain", name="dm")
        boss = await _create(c, "user", name="boss", password="pw-boss", domain_id=d["id"])
        manager = await _role_id(c, "manager")
        assert (
            await c.put(f"{V3}/domains/{d['id']}/users/{boss['id']}/roles/{manager}")
        ).is_success
        outsider = await _create(c, "user", name="outsider", password="pw")
        member, admin = await _role_id(c, "member"), await _role_id(c, "admin")
    async with api.client() as c:
        r = await _token(c, _login("boss", "pw-boss", "dm", {"domain": {"id": d["id"]}}))
        assert r.status_code == 201, r.text
        text = r.headers["X-Subject-Token"]
    async with api.client(text) as c:
        # New users, projects and groups land in the token's domain.
        worker = await _create(c, "user", name="worker", password="pw-w")
        project = await _create(c, "project", name="team")
        group = await _create(c, "group", name="crew")
        assert worker["domain_id"] == project["domain_id"] == group["domain_id"] == d["id"]
        grant = f"{V3}/projects/{project['id']}/users/{worker['id']}/roles"
        assert (await c.put(f"{grant}/{member}")).status_code == 204
        # Never admin: a manager cannot raise anyone above itself.
        assert (await c.put(f"{grant}/{admin}")).status_code == 403
        on_domain = f"{V3}/domains/{d['id']}/users/{worker['id']}/roles/{admin}"
        assert (await c.put(on_domain)).status_code == 403
        assert (await c.put(f"{V3}/groups/{group['id']}/users/{worker['id']}")).status_code == 204
        users = (await c.get(f"{V3}/users")).json()["users"]
        assert {u["name"] for u in users} == {"boss", "worker"}
        r = await c.get(f"{V3}/role_assignments", params={"scope.project.id": project["id"]})
        assert [e["user"]["id"] for e in r.json()["role_assignments"]] == [worker["id"]]
        # Anything of another domain is refused.
        assert (await c.get(f"{V3}/users", params={"domain_id": "default"})).status_code == 403
        r = await c.post(f"{V3}/users", json={"user": {"name": "x", "domain_id": "default"}})
        assert r.status_code == 403
        r = await c.patch(f"{V3}/users/{outsider['id']}", json={"user": {"enabled": False}})
        assert r.status_code == 403
        assert (await c.put(f"{V3}/groups/{group['id']}/users/{outsider['id']}")).status_code == 403
        assert (await c.get(f"{V3}/role_assignments")).status_code == 403
        assert (await c.post(f"{V3}/domains", json={"domain": {"name": "x"}})).status_code == 403
        # Unknown targets are 404 to a manager too.
        assert (await c.get(f"{V3}/users/no-such-user")).status_code == 404
    async with api.client() as c:
        r = await _token(c, _login("worker", "pw-w", "dm", {"project": {"id": project["id"]}}))
        assert r.status_code == 201
        assert {x["name"] for x in r.json()["token"]["roles"]} == {"member", "reader"}
    async with await api.login("admin") as c:
        demo = (await c.get(f"{V3}/projects", params={"name": "demo"})).json()["projects"][0]
        demo_user = (await c.get(f"{V3}/users", params={"name": "demo"})).json()["users"][0]
        url = f"{V3}/projects/{demo['id']}/users/{demo_user['id']}/roles/{manager}"
        assert (await c.put(url)).status_code == 204
    async with await api.login("demo") as c:
        # A manager role on a project gives no identity rights (as in Keystone).
        r = await c.post(f"{V3}/users", json={"user": {"name": "y", "password": "y"}})
        assert r.status_code == 403


async def test_system_scope_grants_and_tokens(api: ApiHarness) -> None:
    async with await api.login("admin") as c:
        user = await _create(c, "user", name="auditor", password="pw-a")
        reader = await _role_id(c, "reader")
        url = f"{V3}/system/users/{user['id']}/roles/{reader}"
        assert (await c.head(url)).status_code == 404
        assert (await c.put(url)).status_code == 204
        assert (await c.head(url)).status_code == 204
        roles = (await c.get(f"{V3}/system/users/{user['id']}/roles")).json()["roles"]
        assert [x["name"] for x in roles] == ["reader"]
        r = await c.get(f"{V3}/role_assignments", params={"scope.system": "all"})
        entries = [e for e in r.json()["role_assignments"] if e["user"]["id"] == user["id"]]
        assert entries[0]["scope"] == {"system": {"all": True}}
        assert entries[0]["links"]["assignment"].endswith(
            f"/v3/system/users/{user['id']}/roles/{reader}"
        )
        r = await c.put(f"{V3}/system/users/no-such-user/roles/{reader}")
        assert r.status_code == 404
    async with api.client() as c:
        r = await _token(c, _login("auditor", "pw-a", "Default", {"system": {"all": True}}))
        assert r.status_code == 201, r.text
        token = r.json()["token"]
        assert token["system"] == {"all": True} and [x["name"] for x in token["roles"]] == [
            "reader"
        ]
        text = r.headers["X-Subject-Token"]
        # No system role: no system-scoped token.
        demo = auth_body("demo", PASSWORD, None)
        demo["auth"]["scope"] = {"system": {"all": True}}
        assert (await _token(c, demo)).status_code == 401
    async with api.client(text) as c:
        assert (await c.get("/compute/v2.1/flavors")).status_code == 403
    async with await api.login("admin") as c:
        assert (await c.delete(url)).status_code == 204
    async with api.client(text) as c:
        assert (await c.get(f"{V3}/auth/domains")).status_code == 401


async def test_rescope_and_validating_ones_own_tokens(api: ApiHarness) -> None:
    async with await api.login("admin") as c:
        user = await _create(c, "user", name="rs", password="pw-rs")
        demo = (await c.get(f"{V3}/projects", params={"name": "demo"})).json()["projects"][0]
        member = await _role_id(c, "member")
        assert (
            await c.put(f"{V3}/projects/{demo['id']}/users/{user['id']}/roles/{member}")
        ).is_success
    async with api.client() as c:
        r = await _token(c, _login("rs", "pw-rs", "Default"))
        unscoped, first = r.headers["X-Subject-Token"], r.json()["token"]
        assert "project" not in first and first["methods"] == ["password"]
        body = {
            "auth": {
                "identity": {"methods": ["token"], "token": {"id": unscoped}},
                "scope": {"project": {"name": "demo", "domain": {"id": "default"}}},
            }
        }
        r = await _token(c, body)
        assert r.status_code == 201, r.text
        token = r.json()["token"]
        assert token["project"]["id"] == demo["id"]
        assert set(token["methods"]) == {"password", "token"}
        assert token["expires_at"] == first["expires_at"]
        scoped = r.headers["X-Subject-Token"]
        body["auth"]["identity"]["token"]["id"] = "not-a-token"
        assert (await _token(c, body)).status_code == 401
    async with api.client(scoped) as c:
        # A user may look at another token of its own, not someone else's.
        r = await c.get(f"{V3}/auth/tokens", headers={"X-Subject-Token": unscoped})
        assert r.status_code == 200 and r.json()["token"]["user"]["id"] == user["id"]
        other = await api.token("demo")
        r = await c.get(f"{V3}/auth/tokens", headers={"X-Subject-Token": other})
        assert r.status_code == 403
        # Revoked, it is gone: 404 (Keystone looks the token up before its policy).
        r = await c.delete(f"{V3}/auth/tokens", headers={"X-Subject-Token": unscoped})
        assert r.status_code == 204
        r = await c.head(f"{V3}/auth/tokens", headers={"X-Subject-Token": unscoped})
        assert r.status_code == 404


async def test_users_keep_free_form_attributes(api: ApiHarness) -> None:
    # Keystone stores a user's attributes it has no column for and shows them back.
    async with await api.login("admin") as c:
        user = await _create(c, "user", name="ff", password="pw", project_id="p-1", team="blue")
        assert user["project_id"] == "p-1" and user["team"] == "blue" and "password" not in user
        r = await c.patch(f"{V3}/users/{user['id']}", json={"user": {"team": "red", "id": "x"}})
        shown = r.json()["user"]
        assert shown["team"] == "red" and shown["project_id"] == "p-1"
        assert shown["id"] == user["id"]


async def test_password_change_by_an_admin_or_the_user_only(api: ApiHarness) -> None:
    async with await api.login("admin") as c:
        user = await _create(c, "user", name="pc", password="old-pw")
        url = f"{V3}/users/{user['id']}/password"
        change = {"user": {"password": "new-pw", "original_password": "old-pw"}}
    async with await api.login("demo") as c:
        assert (await c.post(url, json=change)).status_code == 403
    async with await api.login("admin") as c:
        # Keystone's default lets an admin do it, still knowing the old one.
        wrong = {"user": {"password": "x", "original_password": "wrong"}}
        assert (await c.post(url, json=wrong)).status_code == 401
        assert (await c.post(url, json=change)).status_code == 204
    async with api.client() as c:
        assert (await _token(c, _login("pc", "new-pw", "Default"))).status_code == 201


async def test_project_tags(api: ApiHarness) -> None:
    async with await api.login("admin") as c:
        project = await _create(c, "project", name="tagged", tags=["b", "a"])
        assert project["tags"] == ["a", "b"]
        url = f"{V3}/projects/{project['id']}/tags"
        assert (await c.put(f"{url}/c")).status_code == 201
        assert (await c.get(f"{url}/c")).status_code == 204
        assert (await c.get(f"{url}/nope")).status_code == 404
        assert (await c.put(f"{url}/a,b")).status_code == 400
        r = await c.get(url)
        assert r.json() == {"tags": ["a", "b", "c"]}
        r = await c.get(f"{V3}/projects", params={"tags": "a,c"})
        assert [p["id"] for p in r.json()["projects"]] == [project["id"]]
        r = await c.get(f"{V3}/projects", params={"tags-any": "zz,c"})
        assert [p["id"] for p in r.json()["projects"]] == [project["id"]]
        r = await c.get(f"{V3}/projects", params={"not-tags-any": "a"})
        assert project["id"] not in {p["id"] for p in r.json()["projects"]}
        r = await c.put(url, json={"tags": ["x", "y"]})
        assert r.status_code == 200 and r.json() == {"tags": ["x", "y"]}
        assert (await c.put(url, json={"tags": ["t"] * 81})).status_code == 400
        assert (await c.delete(f"{url}/x")).status_code == 204
        assert (await c.delete(f"{url}/x")).status_code == 404
        r = await c.patch(f"{V3}/projects/{project['id']}", json={"project": {"tags": ["p"]}})
        assert r.json()["project"]["tags"] == ["p"]
        assert (await c.delete(url)).status_code == 204
        assert (await c.get(f"{V3}/projects/{project['id']}")).json()["project"]["tags"] == []
        assert (await c.get(f"{V3}/projects/nope/tags")).status_code == 404
    async with await api.login("demo") as c:
        # Outside the token's project: 403, as for the project itself.
        assert (await c.put(f"{url}/z")).status_code == 403
        assert (await c.get(url)).status_code == 403
