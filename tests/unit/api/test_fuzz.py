"""Property-based fuzzing of the HTTP API: whatever the input, never a 5xx.

Hypothesis generates paths (with odd path parameters), query strings,
microversion headers and JSON bodies (arbitrary, and near-valid ones built
from the shapes the schemas expect) for every route, as admin and as a
member. Bounded to well under a minute.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings

from tests.unit.api.conftest import ApiHarness

ROUTES = [
    ("GET", "/compute/v2.1/flavors"),
    ("GET", "/compute/v2.1/flavors/detail"),
    ("POST", "/compute/v2.1/flavors"),
    ("GET", "/compute/v2.1/flavors/{x}"),
    ("PUT", "/compute/v2.1/flavors/{x}"),
    ("DELETE", "/compute/v2.1/flavors/{x}"),
    ("POST", "/compute/v2.1/flavors/{x}/action"),
    ("GET", "/compute/v2.1/flavors/{x}/os-flavor-access"),
    ("GET", "/compute/v2.1/flavors/{x}/os-extra_specs"),
    ("POST", "/compute/v2.1/flavors/{x}/os-extra_specs"),
    ("PUT", "/compute/v2.1/flavors/{x}/os-extra_specs/{y}"),
    ("DELETE", "/compute/v2.1/flavors/{x}/os-extra_specs/{y}"),
    ("GET", "/compute/v2.1/os-hypervisors"),
    ("GET", "/compute/v2.1/os-hypervisors/detail"),
    ("GET", "/compute/v2.1/os-hypervisors/{x}"),
    ("GET", "/compute/v2.1/os-services"),
    ("PUT", "/compute/v2.1/os-services/{x}"),
    ("DELETE", "/compute/v2.1/os-services/{x}"),
    ("GET", "/compute/v2.1/os-aggregates"),
    ("POST", "/compute/v2.1/os-aggregates"),
    ("GET", "/compute/v2.1/os-aggregates/{x}"),
    ("PUT", "/compute/v2.1/os-aggregates/{x}"),
    ("DELETE", "/compute/v2.1/os-aggregates/{x}"),
    ("POST", "/compute/v2.1/os-aggregates/{x}/action"),
    ("GET", "/compute/v2.1/os-server-groups"),
    ("POST", "/compute/v2.1/os-server-groups"),
    ("GET", "/compute/v2.1/os-server-groups/{x}"),
    ("DELETE", "/compute/v2.1/os-server-groups/{x}"),
    ("GET", "/compute/v2.1/os-availability-zone"),
    ("GET", "/compute/v2.1/os-availability-zone/detail"),
    ("GET", "/compute/v2.1/limits"),
    ("GET", "/compute/v2.1/servers"),
    ("GET", "/compute/v2.1/servers/detail"),
    ("POST", "/compute/v2.1/servers"),
    ("GET", "/compute/v2.1/servers/{x}"),
    ("PUT", "/compute/v2.1/servers/{x}"),
    ("DELETE", "/compute/v2.1/servers/{x}"),
    ("POST", "/compute/v2.1/servers/{x}/action"),
    ("GET", "/compute/v2.1/servers/{x}/os-instance-actions"),
    ("GET", "/compute/v2.1/servers/{x}/os-instance-actions/{y}"),
    ("POST", "/identity/v3/auth/tokens"),
    ("GET", "/identity/v3/projects/{x}"),
    ("GET", "/image/v2/images"),
    ("POST", "/image/v2/images"),
    ("GET", "/image/v2/images/{x}"),
    ("DELETE", "/image/v2/images/{x}"),
    ("PUT", "/image/v2/images/{x}/file"),
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = [
    "name",
    "id",
    "ram",
    "vcpus",
    "disk",
    "swap",
    "rxtx_factor",
    "OS-FLV-EXT-DATA:ephemeral",
    "os-flavor-access:is_public",
    "description",
    "availability_zone",
    "policies",
    "policy",
    "rules",
    "status",
    "disabled_reason",
    "forced_down",
    "host",
    "binary",
    "metadata",
    "visibility",
    "disk_format",
    "container_format",
    "min_ram",
    "min_disk",
    "tags",
    "tenant",
    "flavorRef",
    "imageRef",
    "networks",
    "min_count",
    "max_count",
    "user_data",
    "block_device_mapping_v2",
    "security_groups",
    "adminPass",
    "accessIPv4",
    "OS-DCF:diskConfig",
    "type",
    "state",
]
near_valid_inner = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6)
WRAPPERS = [
    "flavor",
    "aggregate",
    "server_group",
    "extra_specs",
    "add_host",
    "remove_host",
    "set_metadata",
    "addTenantAccess",
    "removeTenantAccess",
    "auth",
    "server",
    "reboot",
    "os-resetState",
    "os-stop",
    "lock",
    "os:scheduler_hints",
]
bodies = st.one_of(
    json_values,
    near_valid_inner,
    st.builds(lambda k, v: {k: v}, st.sampled_from(WRAPPERS), near_valid_inner),
    st.binary(max_size=30).map(lambda b: b),
)
path_params = st.one_of(
    st.sampled_from(
        [
            "1",
            "0",
            "-1",
            "99999999999999999999",
            "f1",
            "00000000-0000-0000-0000-000000000000",
            "action",
            "detail",
        ]
    ),
    st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/?#%"),
        min_size=1,
        max_size=20,
    ),
)
versions = st.one_of(
    st.none(),
    st.sampled_from(["2.1", "2.11", "2.53", "2.55", "2.61", "latest", "2.99", "x"]),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=8),
)
queries = st.dictionaries(
    st.sampled_from(
        [
            "limit",
            "marker",
            "is_public",
            "minRam",
            "sort_key",
            "sort_dir",
            "host",
            "binary",
            "all_projects",
            "offset",
            "with_servers",
            "name",
            "id",
            "tenant_id",
            "hypervisor_hostname_pattern",
            "visibility",
            "status",
            "changes-since",
            "all_tenants",
            "flavor",
            "image",
            "ip",
            "deleted",
            "power_state",
        ]
    ),
    st.text(max_size=12),
    max_size=3,
)

DEADLINE = 30.0


@settings(
    max_examples=1500,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=False,
)
@given(
    route=st.sampled_from(ROUTES),
    x=path_params,
    y=path_params,
    body=bodies,
    version=versions,
    query=queries,
    admin=st.booleans(),
)
async def test_no_input_makes_a_5xx(
    api: ApiHarness,
    fuzz_tokens: dict[str, Any],
    route: tuple[str, str],
    x: str,
    y: str,
    body: Any,
    version: str | None,
    query: dict[str, str],
    admin: bool,
) -> None:
    if time.monotonic() > fuzz_tokens["deadline"]:
        return
    method, template = route
    path = template.replace("{x}", quote(x, safe="")).replace("{y}", quote(y, safe=""))
    headers = {"X-Auth-Token": fuzz_tokens["admin" if admin else "demo"]}
    if version is not None:
        headers["OpenStack-API-Version"] = f"compute {version}"
    kwargs: dict[str, Any] = {"headers": headers, "params": query}
    if method in ("POST", "PUT"):
        if isinstance(body, bytes):
            kwargs["content"] = body
        else:
            kwargs["json"] = body
    async with api.client() as c:
        r = await c.request(method, path, **kwargs)
    assert r.status_code < 500, (method, path, query, body, r.status_code, r.text)


import pytest  # noqa: E402


@pytest.fixture
async def fuzz_tokens(api: ApiHarness) -> dict[str, Any]:
    return {
        "admin": await api.token("admin"),
        "demo": await api.token("demo"),
        "deadline": time.monotonic() + DEADLINE,
    }
