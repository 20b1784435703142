"""A compute host older than the oldest service version the cloud serves is
refused by the conductor when it registers (creates its row or writes its
version into it at start)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nubes import exception, versions
from nubes.context import RequestContext
from nubes.db.api import services
from nubes.objects.service import Service as ServiceRecord
from nubes.testing.cloud import Cloud

TOO_OLD = versions.MINIMUM_SERVICE_VERSION - 1


async def test_a_host_too_old_is_refused_at_registration_and_nothing_is_written(
    tmp_path: Path,
) -> None:
    cloud = await Cloud.start(f"sqlite:///{tmp_path / 'services.sqlite'}")
    try:
        host = await cloud.host("old-1")
        old = ServiceRecord(host="old-1", binary="compute", topic="compute", version=TOO_OLD)
        with pytest.raises(exception.ServiceTooOld) as refused:
            await host.run(old.create, RequestContext())
        assert str(refused.value) == (
            f"compute on old-1 runs service version {TOO_OLD}, older than the oldest this "
            f"cloud serves ({versions.MINIMUM_SERVICE_VERSION}, release "
            f"{versions.release_of(versions.MINIMUM_SERVICE_VERSION)}): upgrade it"
        )
        async with cloud.db.reader() as conn:
            with pytest.raises(exception.ServiceNotFound):
                await services.get_by_host_and_binary(conn, "old-1", "compute")

        supported = ServiceRecord(
            host="old-1",
            binary="compute",
            topic="compute",
            version=versions.MINIMUM_SERVICE_VERSION,
        )
        await host.run(supported.create, RequestContext())
        await host.run(supported.heartbeat, RequestContext())
    finally:
        await cloud.stop()


async def test_an_old_host_restarting_over_its_row_is_refused(tmp_path: Path) -> None:
    """Its row exists (written by newer code): at start it writes its own,
    older, version into it, as every service does, and is refused."""
    cloud = await Cloud.start(f"sqlite:///{tmp_path / 'services.sqlite'}")
    try:
        async with cloud.db.writer() as conn:
            await services.create(
                conn,
                {
                    "host": "old-2",
                    "binary": "compute",
                    "topic": "compute",
                    "version": versions.SERVICE_VERSION,
                },
            )
        host = await cloud.host("old-2")
        record = await host.run(
            ServiceRecord.get_by_host_and_binary, RequestContext(), "old-2", "compute"
        )
        record.version = TOO_OLD
        with pytest.raises(exception.ServiceTooOld, match=f"service version {TOO_OLD}"):
            await host.run(record.save, RequestContext())
        async with cloud.db.reader() as conn:
            row = await services.get_by_host_and_binary(conn, "old-2", "compute")
        assert row["version"] == versions.SERVICE_VERSION
    finally:
        await cloud.stop()
