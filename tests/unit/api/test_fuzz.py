"""Property-based fuzzing of the HTTP API: whatever the input, never a 5xx.

The routes are read from the apps' route tables (``build_app``), so a route
added to compute, identity or image is fuzzed without touching this file.
The request schemas are found the same way: every JSON schema (or list of
schemas per microversion) defined in the module of a route's handler, or in
a ``nubes.api`` module it imports (``server_schemas``), is a body a route of
that module is sent, at the microversion the schema is for.

Hypothesis builds near-valid bodies from each schema (hypothesis-jsonschema)
and mutates them (wrong types, lone surrogates, NaN, huge and deeply nested
values, missing and extra fields), and sends raw hostile bytes, bad
microversion headers, bad query strings, bad path ids, with an admin's, a
member's, a bad or no token. Every answer must be under 500 and, when an
error, a JSON body; after the fuzzing the API must still answer normally.
One cloud (one SQLite database, one app) serves the whole module, seeded
with a flavor, an aggregate, a server group, an image and a server whose
ids the path parameters use, so requests reach past the lookups.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import json
import re
import shutil
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis_jsonschema import from_schema
from starlette.routing import BaseRoute, Mount, Route

from nubes import config
from nubes.api import microversion, validation
from nubes.api.app import build_app
from nubes.api.state import ApiState
from nubes.db.engine import Database
from tests.unit.api.conftest import PASSWORD, USERS, auth_body

#: Examples per route (each sent as the drawn caller and as an admin), and
#: per request schema: with the routes of today (77 routes, 42 schemas) over
#: 2,000 requests in all.
ROUTE_EXAMPLES = 11
SCHEMA_EXAMPLES = 8
MIN_REQUESTS = 2000

FUZZ_SETTINGS = settings(
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)

# --- what there is to fuzz, from the route tables ------------------------------

_PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")
BODY_METHODS = ("POST", "PUT", "PATCH")


def _walk(routes: list[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str, Any]]:
    for route in routes:
        if isinstance(route, Mount):
            yield from _walk(list(route.routes), prefix + route.path)
        elif isinstance(route, Route):
            for method in sorted(route.methods or ()):
                if method != "HEAD":  # the GET handler, without a body
                    yield method, prefix + route.path, route.endpoint


def _is_schema(value: Any) -> bool:
    return isinstance(value, Mapping) and value.get("type") == "object" and "properties" in value


def _versioned(value: Any) -> list[tuple[str | None, Mapping[str, Any]]] | None:
    if _is_schema(value):
        return [(None, value)]
    if (
        isinstance(value, list | tuple)
        and value
        and all(
            isinstance(item, tuple)
            and len(item) == 2
            and isinstance(item[0], tuple)
            and _is_schema(item[1])
            for item in value
        )
    ):
        return [(low, schema) for (low, _high), schema in value]
    return None


def _schemas_of(endpoint: Any) -> dict[str, list[tuple[str | None, Mapping[str, Any]]]]:
    module = inspect.getmodule(endpoint)
    if module is None:
        return {}
    modules = [module] + [
        m
        for m in vars(module).values()
        if isinstance(m, types.ModuleType)
        and m.__name__.startswith("nubes.api")
        and m is not validation  # its building blocks are parts, not bodies
    ]
    found = {}
    for m in modules:
        for name, value in vars(m).items():
            versions = _versioned(value)
            if versions is not None:
                found[f"{m.__name__}.{name}"] = versions
    return found


def _route_table() -> list[tuple[str, str, Any]]:
    conf = config.new_config()
    conf([])
    # The JSON APIs only: the dashboard answers HTML (and redirects), and has
    # tests of its own (tests/browser, tests/unit/test_dashboard_session.py).
    conf.set_override("enabled", False, group="dashboard")
    # Building the app connects to nothing: the database is only named.
    state = ApiState(conf=conf, db=Database("sqlite://"))
    routes = set(_walk(build_app(state).app.routes))
    # /compute/v2 mounts the very handlers of /compute/v2.1 (pinned to 2.1,
    # which the v2.1 routes are fuzzed at too): fuzzing them twice adds time only.
    routes = {r for r in routes if not r[1].startswith("/compute/v2/")}
    return sorted(routes, key=lambda r: (r[1], r[0]))


ROUTES = [(method, path) for method, path, _ in _route_table()]
#: (route, schema name, microversion or None, schema) for every schema of
#: every microversion, each sent to the body-taking routes of its module.
SCHEMA_CASES: list[tuple[tuple[str, ...], str, str | None, Mapping[str, Any]]] = []


def _schema_cases() -> None:
    targets: dict[str, list[tuple[str, str]]] = {}
    schemas: dict[str, list[tuple[str | None, Mapping[str, Any]]]] = {}
    for method, path, endpoint in _route_table():
        if method not in BODY_METHODS:
            continue
        for name, versions in _schemas_of(endpoint).items():
            targets.setdefault(name, []).append((method, path))
            schemas[name] = versions
    for name, versions in sorted(schemas.items()):
        routes = tuple(f"{m} {p}" for m, p in targets[name])
        for version, schema in versions:
            SCHEMA_CASES.append((routes, name, version, schema))


_schema_cases()

# --- hostile values -----------------------------------------------------------


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


HOSTILE_VALUES = st.one_of(
    st.sampled_from(
        [
            "\ud800",
            "a\udfffb",
            float("nan"),
            float("inf"),
            float("-inf"),
            2**64,
            -(2**63) - 1,
            10**400,
            1e308,
            "x" * 70000,
            _nested(validation.MAX_BODY_DEPTH + 5),
            "",
            " ",
            "\x00",
            "١٢٣",
            "NaN",
            "-1",
            "0",
            "99999999999999999999",
            "00000000-0000-0000-0000-000000000000",
            "../../etc/passwd",
            None,
            True,
            [],
            {},
        ]
    ),
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**70), max_value=2**70)
        | st.floats()
        | st.text(max_size=30),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
        ),
        max_leaves=8,
    ),
)

RAW_BODIES = st.sampled_from(
    [
        b"",
        b"   ",
        b"null",
        b"[" * 50000,
        b"[" * 40000 + b"]" * 40000,
        b'{"a":' * 20000,
        b"[" * 200000,
        b'{"x": "\\ud800"}',
        b'"\\udc00"',
        b'{"x": NaN}',
        b'{"x": Infinity}',
        b'{"x": -Infinity}',
        b'{"x": 1e999}',
        b"1" * 5000,
        b"\xff\xfe\x00{",
        b'{"x": "\xed\xa0\x80"}',
        b"{'single': 'quotes'}",
        b'{"a": 1,}',
        b'{"a": 1} trailing',
    ]
) | st.binary(max_size=64)


def _paths(value: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield at
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*at, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*at, index))


def _set(body: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    parent = body
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return body


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[Any]) -> bytes:
    """A body from ``base`` (a schema's), left valid or hit in one place."""
    body = copy.deepcopy(draw(base))
    op = draw(st.sampled_from(["valid", "replace", "replace", "delete", "extra"]))
    if op != "valid":
        path = draw(st.sampled_from(list(_paths(body))))
        if op == "replace":
            body = _set(body, path, draw(HOSTILE_VALUES))
        elif op == "delete" and path:
            parent = body
            for key in path[:-1]:
                parent = parent[key]
            del parent[path[-1]]
        else:
            container = body
            for key in path:
                container = container[key]
            if isinstance(container, dict):
                container[draw(st.text(max_size=12))] = draw(HOSTILE_VALUES)
            elif isinstance(container, list):
                container.append(draw(HOSTILE_VALUES))
    # ensure_ascii writes a lone surrogate as the escape "\ud800", as a
    # hostile client would; allow_nan writes NaN and Infinity bare.
    return json.dumps(body, allow_nan=True).encode()


_STRATEGIES: dict[int, st.SearchStrategy[Any]] = {}


def _schema_strategy(schema: Mapping[str, Any]) -> st.SearchStrategy[Any]:
    # Built once per schema: canonicalising a large schema is the slow part.
    key = id(schema)
    if key not in _STRATEGIES:
        _STRATEGIES[key] = from_schema(dict(schema), allow_x00=True)
    return _STRATEGIES[key]


#: Bodies for any route: hostile JSON and raw bytes (the bodies built from
#: the schemas go to their routes in test_no_body_of_any_schema_gets_a_5xx).
ANY_BODY = st.one_of(
    HOSTILE_VALUES.map(lambda v: json.dumps(v, allow_nan=True).encode()),
    st.dictionaries(st.text(max_size=12), HOSTILE_VALUES, min_size=1, max_size=2).map(
        lambda v: json.dumps(v, allow_nan=True).encode()
    ),
    RAW_BODIES,
)

PATH_SEGMENTS = st.sampled_from(
    [
        "0",
        "-1",
        "1",
        "99999999999999999999",
        "9" * 5000,
        "00000000-0000-0000-0000-000000000000",
        "%ED%A0%80",
        "%FF%FE",
        "%00",
        "%2F",
        "..",
        "detail",
        "action",
        "%D9%A1",
        "a" * 300,
        "NaN",
    ]
) | st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20).map(
    lambda s: quote(s, safe="")
)

BAD_VERSIONS = st.sampled_from(
    [
        "compute 2.99",
        "compute 3.0",
        "compute 2.",
        "compute .1",
        "compute 02.1",
        "compute 2.1.1",
        "compute " + "٢.١",
        "compute 2." + "9" * 5000,
        "compute latest",
        "compute",
        "compute 2.1, compute 2.60",
        "image 2.5",
        "compute -2.1",
        "compute 2.1\x00",
    ]
) | st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=12).map(
    lambda s: "compute " + s
)

QUERY_NAMES = [
    "limit",
    "marker",
    "is_public",
    "minRam",
    "minDisk",
    "sort_key",
    "sort_dir",
    "host",
    "binary",
    "all_projects",
    "all_tenants",
    "with_servers",
    "name",
    "id",
    "tenant_id",
    "project_id",
    "user_id",
    "hypervisor_hostname_pattern",
    "visibility",
    "status",
    "changes-since",
    "changes-before",
    "flavor",
    "image",
    "ip",
    "deleted",
    "power_state",
    "migration_type",
    "instance_uuid",
    "source_compute",
    "hidden",
    "member_status",
    "owner",
    "detailed",
]
QUERY_VALUES = st.sampled_from(
    ["", "-1", "0", "99999999999999999999", "9" * 5000, "%ED%A0%80", "%FF", "NaN", "١", "true"]
) | st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=16).map(
    lambda s: quote(s, safe="")
)
QUERIES = st.lists(
    st.tuples(
        st.sampled_from(QUERY_NAMES)
        | st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=6).map(quote),
        QUERY_VALUES,
    ),
    max_size=4,
).map(lambda pairs: "&".join(f"{k}={v}" for k, v in pairs))

CONTENT_TYPES = st.sampled_from(
    ["application/json", "application/json", "application/octet-stream", "text/plain", None]
)
TOKENS = st.sampled_from(["admin", "demo", "viewer", "none", "bogus"])


# --- the cloud under fuzz -------------------------------------------------------


class Cloud:
    """One API app on its own SQLite file, driven from synchronous tests."""

    def __init__(self, tmp: Path, template: Path) -> None:
        self.runner = asyncio.Runner()
        path = tmp / "api.sqlite"
        shutil.copy(template, path)
        conf = config.new_config()
        conf([])
        conf.set_override("state_path", str(tmp))
        conf.set_override("public_endpoint", "http://nubes.test", group="api")
        self.db = Database(f"sqlite:///{path}")
        self.app = build_app(ApiState(conf=conf, db=self.db))
        # One client on the runner's one loop for every request.
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://nubes.test"
        )
        self.sent = 0
        self.routes_fuzzed: set[tuple[str, str]] = set()
        self.tokens = {"none": "", "bogus": "not-a-token"}
        for user in ("admin", "demo", "viewer"):
            r = self.send("POST", "/identity/v3/auth/tokens", auth=auth_body(user, *_scope(user)))
            assert r.status_code == 201, r.text
            self.tokens[user] = r.headers["X-Subject-Token"]
        self.ids = self._seed()

    def send(
        self,
        method: str,
        url: str,
        *,
        token: str = "",
        version: str | None = None,
        content: bytes | None = None,
        auth: Any = None,
        content_type: str | None = "application/json",
    ) -> httpx.Response:
        headers: dict[str, Any] = {}
        if content_type is not None:
            headers["Content-Type"] = content_type
        if token:
            headers["X-Auth-Token"] = token
        if version is not None:
            # Header bytes as a client would send them (HTTP carries bytes).
            headers[microversion.HEADER] = version.encode("utf-8", "surrogatepass")

        self.sent += 1
        return self.runner.run(
            self.client.request(method, url, headers=headers, content=content, json=auth)
        )

    def _seed(self) -> dict[str, str]:
        """A resource of each kind, whose ids path parameters use."""
        admin = self.tokens["admin"]

        def post(url: str, body: Any, key: str, version: str | None = None) -> str:
            r = self.send(
                "POST", url, token=admin, version=version, content=json.dumps(body).encode()
            )
            assert r.status_code < 300, r.text
            return str(r.json()[key]["id"]) if key else str(r.json()["id"])

        ids = {
            "flavor": post(
                "/compute/v2.1/flavors",
                {"flavor": {"name": "fz", "id": "fz", "ram": 64, "vcpus": 1, "disk": 1}},
                "flavor",
            ),
            "aggregate": post(
                "/compute/v2.1/os-aggregates", {"aggregate": {"name": "fz"}}, "aggregate"
            ),
            "group": post(
                "/compute/v2.1/os-server-groups",
                {"server_group": {"name": "fz", "policies": ["anti-affinity"]}},
                "server_group",
            ),
            "image": post(
                "/image/v2/images",
                {"name": "fz", "disk_format": "raw", "container_format": "bare"},
                "",
            ),
        }
        r = self.send(
            "PUT",
            f"/image/v2/images/{ids['image']}/file",
            token=admin,
            content=b"disk",
            content_type="application/octet-stream",
        )
        assert r.status_code == 204, r.text
        ids["server"] = post(
            "/compute/v2.1/servers",
            {
                "server": {
                    "name": "fz",
                    "flavorRef": ids["flavor"],
                    "imageRef": ids["image"],
                    "networks": "none",
                }
            },
            "server",
            version="compute 2.37",
        )
        return ids

    def close(self) -> None:
        self.runner.run(self.client.aclose())
        self.runner.run(self.db.dispose())
        self.runner.close()


def _scope(user: str) -> tuple[str, str]:
    return PASSWORD, USERS[user][0]


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory, _template: Path) -> Iterator[Cloud]:
    c = Cloud(tmp_path_factory.mktemp("fuzz"), _template)
    yield c
    c.close()


def _fill(template: str, segments: list[str]) -> str:
    it = iter(segments)
    return _PARAM.sub(lambda _: next(it, "x"), template)


def _check(cloud: Cloud, method: str, url: str, r: httpx.Response, content: bytes | None) -> None:
    shown = (content or b"")[:300]
    assert r.status_code < 500, (method, url[:300], shown, r.status_code, r.text[:500])
    if r.status_code >= 400:
        # Every refusal in the service's JSON error shape, never plain text.
        assert r.headers.get("content-type", "").startswith("application/json"), (
            method,
            url[:300],
            r.status_code,
            r.text[:300],
        )
        r.json()


# --- the fuzz tests ----------------------------------------------------------------


@pytest.mark.timeout(300)
@pytest.mark.parametrize("route", ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
@settings(FUZZ_SETTINGS, max_examples=ROUTE_EXAMPLES)
@given(data=st.data())
def test_no_request_to_any_route_gets_a_5xx(
    cloud: Cloud, route: tuple[str, str], data: st.DataObject
) -> None:
    method, template = route
    known = st.sampled_from(sorted(cloud.ids.values()))
    segments = data.draw(st.lists(known | PATH_SEGMENTS, min_size=3, max_size=3), "path")
    url = _fill(template, segments)
    query = data.draw(QUERIES, "query")
    if query:
        url += "?" + query
    version = data.draw(
        st.none()
        | st.sampled_from(["compute 2.1", "compute 2.53", "compute latest"])
        | BAD_VERSIONS,
        "version",
    )
    user = data.draw(TOKENS, "token")
    content = data.draw(ANY_BODY, "body") if method in BODY_METHODS else None
    content_type = data.draw(CONTENT_TYPES, "content type")
    # As the drawn caller, then as an admin, whom no policy stops before the
    # hostile parts are read.
    for who in dict.fromkeys((user, "admin")):
        r = cloud.send(
            method,
            url,
            token=cloud.tokens[who],
            version=version,
            content=content,
            content_type=content_type,
        )
        _check(cloud, method, url, r, content)
    cloud.routes_fuzzed.add(route)


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "case",
    SCHEMA_CASES,
    ids=[f"{c[1].rsplit('.', 2)[-2]}.{c[1].rsplit('.', 1)[-1]}@{c[2]}" for c in SCHEMA_CASES],
)
@settings(FUZZ_SETTINGS, max_examples=SCHEMA_EXAMPLES)
@given(data=st.data())
def test_no_body_of_any_schema_gets_a_5xx(
    cloud: Cloud,
    case: tuple[tuple[str, ...], str, str | None, Mapping[str, Any]],
    data: st.DataObject,
) -> None:
    routes, _name, version, schema = case
    method, template = data.draw(st.sampled_from(routes), "route").split(" ", 1)
    url = _fill(template, [data.draw(st.sampled_from(sorted(cloud.ids.values())), "id")] * 3)
    content = data.draw(mutated(_schema_strategy(schema)), "body")
    header = f"compute {version}" if version else None
    # Drawing the body is the slow part: each goes to an admin and a member.
    for who in ("admin", "demo"):
        r = cloud.send(method, url, token=cloud.tokens[who], version=header, content=content)
        _check(cloud, method, url, r, content)


def test_the_api_still_answers_after_the_fuzzing(cloud: Cloud) -> None:
    """Runs last in the module: the fuzzing left a working API behind."""
    admin = cloud.tokens["admin"]
    r = cloud.send("GET", "/compute/v2.1/flavors/detail", token=admin)
    assert r.status_code == 200, r.text
    assert isinstance(r.json()["flavors"], list)
    r = cloud.send("GET", "/image/v2/images", token=admin)
    assert r.status_code == 200, r.text
    r = cloud.send("POST", "/identity/v3/auth/tokens", auth=auth_body("demo", *_scope("demo")))
    assert r.status_code == 201, r.text
    if cloud.routes_fuzzed == set(ROUTES):
        # The whole module ran: it sent what the suite promises.
        assert cloud.sent >= MIN_REQUESTS, cloud.sent
