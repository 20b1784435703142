"""RPC version caps from [upgrade_levels] and the oldest service running."""

from __future__ import annotations

import pytest

from nubes import versions
from nubes.rpc import client as rpc_client
from nubes.rpc.transport import Target, get_transport


def test_every_service_version_names_every_api() -> None:
    apis = {"compute", "conductor", "scheduler"}
    for number, table in versions.SERVICE_VERSION_HISTORY.items():
        assert set(table) == apis, number
    assert max(versions.SERVICE_VERSION_HISTORY) == versions.SERVICE_VERSION


@pytest.mark.parametrize(
    ("value", "oldest", "cap"),
    [
        (None, 1, None),
        ("", 1, None),
        ("1.0", 2, "1.0"),
        ("auto", None, None),
        ("auto", 1, "1.0"),
        ("auto", 2, "1.1"),
        ("auto", 3, "1.2"),
        ("auto", 99, "1.2"),
        ("auto", 0, "1.0"),
    ],
)
def test_resolve_cap(value: str | None, oldest: int | None, cap: str | None) -> None:
    assert versions.resolve_cap(value, "compute", oldest) == cap


def test_a_capped_client_refuses_newer_methods_before_sending() -> None:
    from nubes.context import RequestContext
    from nubes.exception import UnsupportedVersion

    client = rpc_client.RPCClient(get_transport("memory:///caps"), Target("compute"))
    client.set_version_cap("1.0")
    assert not client.can_send_version("1.1")
    with pytest.raises(UnsupportedVersion):
        client.prepare(version="1.1")._encode(RequestContext(), "live_migration", {})
    client.set_version_cap(None)
    assert client.can_send_version("1.1")
