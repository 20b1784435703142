"""With the broker away, a create is accepted at once (its task is durable in
the database) and a conductor's poll finds the task."""

from __future__ import annotations

from pathlib import Path

import pytest

from nubes.api.servers import ServersAPI
from nubes.conductor.rpcapi import ConductorAPI
from nubes.context import RequestContext
from nubes.rpc.transport import get_transport
from tests.unit.conductor.conftest import IMAGE, start_cloud

# Far shorter than a cast's own wait for a broker that does not answer.
pytestmark = pytest.mark.timeout(30)


async def test_a_create_with_the_broker_away_is_accepted_and_built(
    tmp_path: Path, ctxt: RequestContext
) -> None:
    cloud = await start_cloud(tmp_path)
    # The API's bus: a broker address where nothing answers.
    away = get_transport("rabbit://api.ctl-0:pw@127.0.0.1:1/", identity="api.ctl-0")
    try:
        api = ServersAPI(cloud.db, ConductorAPI(away), conf=cloud.conf)
        (inst,) = await api.create_servers(ctxt, name="t", flavor="small", image=IMAGE)
        # Never told by a kick, the conductor finds the task by polling.
        (row,) = await cloud.wait_for([inst.uuid], lambda r: r["vm_state"] == "active")
        assert row["host"]
    finally:
        await away.close()
        await cloud.stop()
