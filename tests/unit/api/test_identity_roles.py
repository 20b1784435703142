"""Implied roles (``/v3/roles/{prior}/implies/{implied}``, ``/v3/role_inferences``)
and domain-specific roles over HTTP, with Keystone's refusals."""

from __future__ import annotations

from typing import Any

import httpx

from tests.unit.api.conftest import PASSWORD, ApiHarness, auth_body

V3 = "/identity/v3"


async def _role(c: httpx.AsyncClient, name: str, domain_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name}
    if domain_id:
        body["domain_id"] = domain_id
    r = await c.post(f"{V3}/roles", json={"role": body})
    assert r.status_code == 201, r.text
    return dict(r.json()["role"])


async def _named(c: httpx.AsyncClient, name: str) -> str:
    (role,) = (await c.get(f"{V3}/roles", params={"name": name})).json()["roles"]
    return str(role["id"])


def _rule(prior: str, implied: str) -> str:
    return f"{V3}/roles/{prior}/implies/{implied}"


async def test_default_chain_is_rules_listed_like_any_other(api: ApiHarness) -> None:
    async with await api.login("admin") as c:
        ids = {n: await _named(c, n) for n in ("admin", "manager", "member", "reader")}
        r = await c.get(f"{V3}/role_inferences")
        assert r.status_code == 200
        rules = {
            (rule["prior_role"]["name"], i["name"])
            for rule in r.json()["role_inferences"]
            for i in rule["implies"]
        }
        assert {("admin", "manager"), ("manager", "member"), ("member", "reader")} <= rules
        assert (await c.head(_rule(ids["member"], ids["reader"]))).status_code == 204
        # Only direct rules: admin implies manager, not reader, by a rule.
        assert (await c.get(_rule(ids["admin"], ids["reader"]))).status_code == 404


async def test_rule_lifecycle_changes_tokens_and_effective_assignments(api: ApiHarness) -> None:
    async with await api.login("admin") as c:
        a, b, d = [await _role(c, n) for n in ("ra", "rb", "rd")]
        r = await c.put(_rule(a["id"], b["id"]))
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["role_inference"]["prior_role"]["id"] == a["id"]
        assert body["role_inference"]["implies"]["name"] == "rb"
        assert body["links"]["self"].endswith(f"/v3/roles/{a['id']}/implies/{b['id']}")
        assert {"id", "name", "links"} <= set(body["role_inference"]["implies"])
        assert (await c.put(_rule(a["id"], b["id"]))).status_code == 409
        assert (await c.put(_rule(b["id"], d["id"]))).status_code == 201
        assert (await c.get(_rule(a["id"], b["id"]))).json() == body
        listed = (await c.get(f"{V3}/roles/{a['id']}/implies")).json()["role_inference"]
        assert [i["id"] for i in listed["implies"]] == [b["id"]]
        # A chain closing on itself is refused.
        r = await c.put(_rule(d["id"], a["id"]))
        assert r.status_code == 400, r.text
        assert (await c.put(_rule(a["id"], a["id"]))).status_code == 400
        # Nothing may imply admin; an unknown role is a 404.
        assert (await c.put(_rule(a["id"], await _named(c, "admin")))).status_code == 403
        assert (await c.put(_rule(a["id"], "nope"))).status_code == 404
        # A user given ``ra`` on demo holds rb and rd through the rules.
        me = (await c.get(f"{V3}/users", params={"name": "demo"})).json()["users"][0]
        demo = (await c.get(f"{V3}/projects", params={"name": "demo"})).json()["projects"][0]
        grant = f"{V3}/projects/{demo['id']}/users/{me['id']}/roles/{a['id']}"
        assert (await c.put(grant)).status_code == 204
        params = {"user.id": me["id"], "scope.project.id": demo["id"], "effective": "true"}
        found = {
            e["role"]["id"]
            for e in (await c.get(f"{V3}/role_assignments", params=params)).json()[
                "role_assignments"
            ]
        }
        assert {a["id"], b["id"], d["id"]} <= found
    async with api.client() as anon:
        r = await anon.post(f"{V3}/auth/tokens", json=auth_body("demo", PASSWORD, "demo"))
        token = r.headers["X-Subject-Token"]
        names = {x["name"] for x in r.json()["token"]["roles"]}
        assert {"ra", "rb", "rd", "member", "reader"} <= names
    async with await api.login("admin") as c:
        assert (await c.delete(_rule(a["id"], b["id"]))).status_code == 204
        assert (await c.delete(_rule(a["id"], b["id"]))).status_code == 404
        assert (await c.get(_rule(a["id"], b["id"]))).status_code == 404
        found = {
            e["role"]["id"]
            for e in (await c.get(f"{V3}/role_assignments", params=params)).json()[
                "role_assignments"
            ]
        }
        assert a["id"] in found and b["id"] not in found and d["id"] not in found
    async with api.client(token) as c:
        # The token that held the rule's roles is revoked with the rule.
        assert (await c.get(f"{V3}/roles")).status_code == 401


async def test_rules_are_for_admins_to_write(api: ApiHarness) -> None:
    async with await api.login("admin") as c:
        a, b = await _role(c, "wa"), await _role(c, "wb")
    async with await api.login("demo") as c:
        assert (await c.put(_rule(a["id"], b["id"]))).status_code == 403
        assert (await c.get(f"{V3}/role_inferences")).status_code == 200


async def test_domain_roles_imply_global_ones_but_never_reach_tokens(api: ApiHarness) -> None:
    async with await api.login("admin") as c:
        d1 = (await c.post(f"{V3}/domains", json={"domain": {"name": "rd1"}})).json()["domain"]
        d2 = (await c.post(f"{V3}/domains", json={"domain": {"name": "rd2"}})).json()["domain"]
        dr1 = await _role(c, "same", d1["id"])
        dr2 = await _role(c, "same", d2["id"])
        glob = await _role(c, "same")
        assert dr1["domain_id"] == d1["id"] and glob["domain_id"] is None
        r = await c.post(f"{V3}/roles", json={"role": {"name": "same", "domain_id": d1["id"]}})
        assert r.status_code == 409
        r = await c.post(f"{V3}/roles", json={"role": {"name": "x", "domain_id": "nope"}})
        assert r.status_code == 404
        listed = (await c.get(f"{V3}/roles", params={"domain_id": d1["id"]})).json()["roles"]
        assert [x["id"] for x in listed] == [dr1["id"]]
        assert dr1["id"] not in {x["id"] for x in (await c.get(f"{V3}/roles")).json()["roles"]}
        r = await c.patch(f"{V3}/roles/{dr1['id']}", json={"role": {"domain_id": d2["id"]}})
        assert r.status_code == 400
        # Domain role -> domain role (any domain) and -> global role: allowed.
        assert (await c.put(_rule(dr1["id"], dr2["id"]))).status_code == 201
        assert (await c.put(_rule(dr1["id"], glob["id"]))).status_code == 201
        # Global -> domain role: Keystone's 403.
        assert (await c.put(_rule(glob["id"], dr1["id"]))).status_code == 403
        me = (await c.get(f"{V3}/users", params={"name": "demo"})).json()["users"][0]
        demo = (await c.get(f"{V3}/projects", params={"name": "demo"})).json()["projects"][0]
        assert (
            await c.put(f"{V3}/projects/{demo['id']}/users/{me['id']}/roles/{dr1['id']}")
        ).status_code == 204
        params = {"user.id": me["id"], "scope.project.id": demo["id"], "effective": "true"}
        found = {
            e["role"]["id"]
            for e in (await c.get(f"{V3}/role_assignments", params=params)).json()[
                "role_assignments"
            ]
        }
        assert glob["id"] in found and dr1["id"] not in found and dr2["id"] not in found
        assert (await c.delete(f"{V3}/roles/{dr1['id']}")).status_code == 204
        assert (await c.get(f"{V3}/roles/{dr1['id']}/implies")).status_code == 404
    async with api.client() as anon:
        r = await anon.post(f"{V3}/auth/tokens", json=auth_body("demo", PASSWORD, "demo"))
        ids = {x["id"] for x in r.json()["token"]["roles"]}
        assert dr1["id"] not in ids and glob["id"] not in ids
