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
        ("auto", 4, "1.3"),
        ("auto", 5, "1.4"),
        ("auto", 6, "1.5"),
        ("auto", 7, "1.7"),
        ("auto", 8, "1.8"),
        ("auto", 9, "1.9"),
        ("auto", 10, "1.9"),
        ("auto", 11, "1.10"),
        ("auto", 12, "1.10"),
        ("auto", 13, "1.11"),
        ("auto", 14, "1.12"),
        ("auto", 15, "1.13"),
        ("auto", 99, "1.13"),
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


def test_every_release_names_a_known_service_version() -> None:
    assert set(versions.RELEASES.values()) <= set(versions.SERVICE_VERSION_HISTORY)
    assert max(versions.RELEASES.values()) == versions.SERVICE_VERSION


@pytest.mark.parametrize("api", versions.APIS)
@pytest.mark.parametrize(
    ("value", "oldest", "kind"),
    [
        (None, 1, "unset"),
        ("1.0", 3, "version"),
        ("alder", 3, "release"),
        ("birch", 3, "release"),
        ("cedar", 1, "release"),
        ("auto", 1, "auto"),
        ("auto", 2, "auto"),
        ("auto", None, "auto"),
    ],
)
def test_every_upgrade_level_option_takes_every_kind_of_value(
    api: str, value: str | None, oldest: int | None, kind: str
) -> None:
    expected = {
        "unset": None,
        "version": value,
        "release": versions.api_version_of(versions.RELEASES.get(value or "", 0), api),
        "auto": None if oldest is None else versions.api_version_of(oldest, api),
    }[kind]
    assert versions.resolve_cap(value, api, oldest) == expected
    if kind == "release":
        # A release name means what that release's services of the API serve.
        assert expected == versions.SERVICE_VERSION_HISTORY[versions.RELEASES[str(value)]][api]


@pytest.mark.parametrize("api", versions.APIS)
def test_the_release_names_the_help_offers_load_and_bad_values_are_refused(
    api: str, tmp_path
) -> None:
    from nubes import config, exception

    for value in ("birch", "1.1", "auto"):
        path = tmp_path / f"{value}.conf"
        path.write_text(f"[upgrade_levels]\n{api} = {value}\n")
        conf = config.load(["--config-file", str(path)])
        assert getattr(conf.upgrade_levels, api) == value
    path = tmp_path / "bad.conf"
    path.write_text(f"[upgrade_levels]\n{api} = rocky\n")
    with pytest.raises(exception.ConfigError, match="release name"):
        config.load(["--config-file", str(path)])
    with pytest.raises(exception.ConfigError, match="neither an RPC version"):
        versions.resolve_cap("1.x", api, None)


def test_the_running_service_version_serves_what_the_managers_serve() -> None:
    # Regression: conductor RPC 1.2 (relay_notification) shipped while the
    # history still said 1.1, so `[upgrade_levels] conductor = auto` capped
    # every host below the method its notifier calls.
    from nubes.compute.manager import ComputeManager
    from nubes.conductor.manager import ConductorManager
    from nubes.scheduler.manager import SchedulerManager

    newest = versions.SERVICE_VERSION_HISTORY[versions.SERVICE_VERSION]
    assert newest == {
        "compute": ComputeManager.RPC_API_VERSION,
        "conductor": ConductorManager.RPC_API_VERSION,
        "scheduler": SchedulerManager.RPC_API_VERSION,
    }
    assert max(versions.SERVICE_VERSION_HISTORY) == versions.SERVICE_VERSION
