"""select_destinations end to end on SQLite: claims, alternates, races, hints, groups."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import shutil
import uuid
from pathlib import Path

import pytest
from oslo_config import cfg
from sqlalchemy import func, select, update
from sqlalchemy.engine import make_url

from nubes import exception
from nubes.context import RequestContext
from nubes.db.api import compute_nodes, groups
from nubes.db.engine import Database
from nubes.db.models import allocations, service_heartbeats, services
from nubes.db.models import compute_nodes as nodes_table
from nubes.objects.request_spec import RequestSpec
from nubes.scheduler.manager import SchedulerManager
from nubes.testing.fleet import HostSpec, create_aggregate, create_hosts
from tests.unit.scheduler.helpers import flavor


def _uuids(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


def _spec(**values: object) -> RequestSpec:
    fl = values.pop("flavor", None) or flavor(vcpus=1, memory_mb=1024, root_gb=10)
    hints = values.pop("scheduler_hints", None)
    return RequestSpec.from_components(flavor=fl, scheduler_hints=hints, project_id="p1", **values)  # type: ignore[arg-type]


async def _allocs(db: Database) -> dict[str, list[str]]:
    """consumer -> hosts it holds on."""
    async with db.reader() as conn:
        rows = (
            await conn.execute(
                select(allocations.c.consumer_uuid, nodes_table.c.host).join(
                    nodes_table, nodes_table.c.id == allocations.c.compute_node_id
                )
            )
        ).all()
    out: dict[str, list[str]] = {}
    for consumer, host in rows:
        out.setdefault(consumer, []).append(host)
    return out


async def _fleet(db: Database, n: int = 4, **spec: object) -> dict[str, int]:
    return await create_hosts(db, [HostSpec(f"h{i}", **spec) for i in range(n)])  # type: ignore[arg-type]


async def test_chosen_host_is_claimed_alternates_are_not(db: Database, manager: SchedulerManager):
    await _fleet(db, 5, vcpus=4, memory_mb=4096)
    ids = _uuids(2)
    result = await manager.select_destinations(RequestContext(), _spec(), ids)
    assert len(result) == 2
    for instance, selections in zip(ids, result, strict=True):
        assert len(selections) == 3  # max_attempts = 3
        assert selections[0].claimed and not any(s.claimed for s in selections[1:])
        assert len({s.host for s in selections}) == 3
        assert all(s.instance_uuid == instance for s in selections)
        assert selections[0].policy == "default"
    held = await _allocs(db)
    assert held == {ids[0]: [result[0][0].host], ids[1]: [result[1][0].host]}
    async with db.reader() as conn:
        node = await compute_nodes.get_by_uuid(conn, result[0][0].compute_node_uuid)
    assert node["vcpus_used"] == 1 and node["memory_mb_used"] == 1024


async def test_without_alternates(db: Database, manager: SchedulerManager):
    await _fleet(db, 3)
    (sel,) = await manager.select_destinations(RequestContext(), _spec(), _uuids(1), False)
    assert len(sel) == 1


async def test_spreads_by_default_and_updates_its_view(db: Database, manager: SchedulerManager):
    await _fleet(db, 3, vcpus=8, memory_mb=8192)
    result = await manager.select_destinations(RequestContext(), _spec(), _uuids(3))
    assert len({r[0].host for r in result}) == 3


async def test_no_valid_host_names_filters_and_counts(db: Database, manager: SchedulerManager):
    await _fleet(db, 3, memory_mb=512)
    with pytest.raises(exception.NoValidHost) as err:
        await manager.select_destinations(RequestContext(), _spec(), _uuids(1))
    message = str(err.value)
    assert "RamFilter removed 3" in message and "ComputeFilter removed 0" in message
    assert err.value.safe


async def test_the_operators_reserved_memory_is_never_given_to_a_server(
    db: Database, conf: cfg.ConfigOpts
):
    # 2 GB hosts with 1.5 GB reserved by the operator (ratio 1.0 here): a
    # 1 GB server fits on none, though the hosts report 2 GB free.
    await _fleet(db, 2, memory_mb=2048, ram_allocation_ratio=1.0)
    conf.set_override("reserved_host_memory_mb", 1536)
    manager = SchedulerManager(db, conf)
    try:
        with pytest.raises(exception.NoValidHost) as err:
            await manager.select_destinations(RequestContext(), _spec(), _uuids(1))
        assert "RamFilter removed 2" in str(err.value)
        # 512 MB still fits: reserved is kept back, not the whole host.
        small = _spec(flavor=flavor(vcpus=1, memory_mb=512, root_gb=1))
        (chosen,) = await manager.select_destinations(RequestContext(), small, _uuids(1))
        assert chosen[0].claimed
    finally:
        await manager.close()
    assert await _allocs(db) != {}


async def test_all_or_nothing(db: Database, manager: SchedulerManager):
    await _fleet(db, 2, vcpus=1, memory_mb=1024)
    with pytest.raises(exception.NoValidHost):
        await manager.select_destinations(RequestContext(), _spec(), _uuids(3))
    assert await _allocs(db) == {}
    # The view gave the room back too: two fit now.
    assert len(await manager.select_destinations(RequestContext(), _spec(), _uuids(2))) == 2


async def test_lost_race_moves_on_to_the_next_host(
    db: Database, conf: cfg.ConfigOpts, manager: SchedulerManager
):
    await _fleet(db, 2, vcpus=1, memory_mb=4096)
    other = SchedulerManager(db, conf)
    await manager.view.refresh()
    await other.view.refresh()
    first = await other.select_destinations(RequestContext(), _spec(), _uuids(1))
    # `manager` still believes both hosts are empty; its claim on the filled
    # one fails in the database, and it takes the other.
    second = await manager.select_destinations(RequestContext(), _spec(), _uuids(1))
    assert first[0][0].host != second[0][0].host
    with pytest.raises(exception.NoValidHost):
        await manager.select_destinations(RequestContext(), _spec(), _uuids(1))
    await other.close()


async def test_stale_view_then_exhausted_says_claimed_first(
    db: Database, conf: cfg.ConfigOpts, manager: SchedulerManager
):
    await _fleet(db, 1, vcpus=1)
    other = SchedulerManager(db, conf)
    await manager.view.refresh()
    await other.select_destinations(RequestContext(), _spec(), _uuids(1))
    with pytest.raises(exception.NoValidHost, match="claimed them first"):
        await manager.select_destinations(RequestContext(), _spec(), _uuids(1))
    await other.close()


async def test_retry_of_the_same_instance_is_idempotent(db: Database, manager: SchedulerManager):
    await _fleet(db, 3)
    ids = _uuids(1)
    first = await manager.select_destinations(RequestContext(), _spec(), ids)
    again = await manager.select_destinations(RequestContext(), _spec(), ids)
    assert again[0][0].host == first[0][0].host
    assert (await _allocs(db))[ids[0]] == [first[0][0].host]


async def test_claim_alternate_moves_the_claim(db: Database, manager: SchedulerManager):
    await _fleet(db, 3, vcpus=1)
    ids = _uuids(1)
    (sels,) = await manager.select_destinations(RequestContext(), _spec(), ids)
    moved = await manager.claim_alternate(RequestContext(), sels[1])
    assert moved.claimed and moved.host == sels[1].host and moved.generation is not None
    assert (await _allocs(db))[ids[0]] == [sels[1].host]
    # The last alternate is filled meanwhile: the re-check refuses it.
    await manager.select_destinations(
        RequestContext(), _spec(force_hosts=[sels[2].host]), _uuids(1)
    )
    with pytest.raises(exception.NoValidHost, match="cannot take it now"):
        await manager.claim_alternate(RequestContext(), sels[2])
    assert ids[0] not in await _allocs(db)  # the failed host's claim is gone either way


async def test_release_gives_the_room_back(db: Database, manager: SchedulerManager):
    await _fleet(db, 1, vcpus=1)
    ids = _uuids(1)
    await manager.select_destinations(RequestContext(), _spec(), ids)
    assert await manager.release(RequestContext(), ids[0]) == 1
    assert await manager.release(RequestContext(), ids[0]) == 0
    await manager.select_destinations(RequestContext(), _spec(), _uuids(1))


async def test_forced_requested_and_ignored_hosts(db: Database, manager: SchedulerManager):
    await _fleet(db, 4)
    ctx = RequestContext()
    (sel,) = await manager.select_destinations(ctx, _spec(force_hosts=["h2"]), _uuids(1))
    assert sel[0].host == "h2" and len(sel) == 1
    (sel,) = await manager.select_destinations(ctx, _spec(requested_destination="h3"), _uuids(1))
    assert sel[0].host == "h3"
    (sel,) = await manager.select_destinations(
        ctx, _spec(ignore_hosts=["h0", "h1", "h2"]), _uuids(1)
    )
    assert {s.host for s in sel} == {"h3"}
    with pytest.raises(exception.NoValidHost, match="RequestedHosts removed 4"):
        await manager.select_destinations(ctx, _spec(force_hosts=["nowhere"]), _uuids(1))


async def test_group_anti_affinity_from_the_database(db: Database, manager: SchedulerManager):
    await _fleet(db, 3)
    ctx = RequestContext()
    async with db.writer() as conn:
        group = await groups.group_create(conn, {"policy": "anti-affinity", "project_id": "p1"})
    placed = set()
    for _ in range(3):
        ids = _uuids(1)
        (sel,) = await manager.select_destinations(
            ctx, _spec(scheduler_hints={"group": group["uuid"]}), ids
        )
        placed.add(sel[0].host)
        async with db.writer() as conn:
            await groups.group_members_add(conn, group["uuid"], ids)
    assert placed == {"h0", "h1", "h2"}
    with pytest.raises(exception.NoValidHost, match="ServerGroupAntiAffinityFilter removed 3"):
        await manager.select_destinations(
            ctx, _spec(scheduler_hints={"group": group["uuid"]}), _uuids(1)
        )


async def test_group_affinity_within_one_request(db: Database, manager: SchedulerManager):
    await _fleet(db, 3)
    spec = _spec(instance_group_uuid=str(uuid.uuid4()), instance_group_policy="affinity")
    result = await manager.select_destinations(RequestContext(), spec, _uuids(3))
    assert len({r[0].host for r in result}) == 1


async def test_unknown_group_hint(db: Database, manager: SchedulerManager):
    await _fleet(db, 1)
    with pytest.raises(exception.InvalidSchedulerHint):
        await manager.select_destinations(
            RequestContext(), _spec(scheduler_hints={"group": str(uuid.uuid4())}), _uuids(1)
        )


async def test_same_and_different_host_hints(db: Database, manager: SchedulerManager):
    await _fleet(db, 3)
    ctx = RequestContext()
    a, b = _uuids(1), _uuids(1)
    (sa,) = await manager.select_destinations(ctx, _spec(), a)
    (sb,) = await manager.select_destinations(ctx, _spec(), b)
    (same,) = await manager.select_destinations(
        ctx, _spec(scheduler_hints={"same_host": a}), _uuids(1)
    )
    assert same[0].host == sa[0].host
    (diff,) = await manager.select_destinations(
        ctx, _spec(scheduler_hints={"different_host": [a[0], b[0]]}), _uuids(1)
    )
    assert diff[0].host not in {sa[0].host, sb[0].host}


async def test_view_refresh_is_incremental(db: Database, manager: SchedulerManager):
    host_ids = await _fleet(db, 2, vcpus=2)
    view = manager.view
    await view.refresh()
    assert len(view) == 2
    async with db.writer() as conn:
        await compute_nodes.update(conn, host_ids["h0"], {"vcpus": 64})
        await compute_nodes.destroy(conn, host_ids["h1"])
        await conn.execute(update(services).where(services.c.host == "h0").values(disabled=True))
    await create_hosts(db, [HostSpec("new")])
    await create_aggregate(db, "z", ["new"], {"availability_zone": "z"})
    await view.refresh()
    assert view.by_node_id[host_ids["h0"]].vcpus == 64
    assert not view.by_node_id[host_ids["h0"]].usable
    assert not view.by_node_id[host_ids["h1"]].live
    (new,) = [hs for hs in view.hosts if hs.host == "new"]
    assert new.usable and [a.name for a in new.aggregates] == ["z"]
    (sel,) = await manager.select_destinations(RequestContext(), _spec(), _uuids(1))
    assert sel[0].host == "new"


async def test_silent_hosts_are_skipped(db: Database, manager: SchedulerManager):
    await create_hosts(
        db,
        [HostSpec("quiet", silent_for=600), HostSpec("never", silent_for=None), HostSpec("alive")],
    )
    # Never reported: it counts from its creation (nubes.liveness), long ago.
    async with db.writer() as conn:
        await conn.execute(
            update(services)
            .where(services.c.host == "never")
            .values(created_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=600))
        )
    (sel,) = await manager.select_destinations(RequestContext(), _spec(), _uuids(1))
    assert [s.host for s in sel] == ["alive"]


async def test_an_alternate_whose_host_went_down_is_not_claimed(
    db: Database, manager: SchedulerManager
):
    await _fleet(db, 3)
    ids = _uuids(1)
    (sels,) = await manager.select_destinations(RequestContext(), _spec(), ids)
    # The alternate's host stops reporting after it was chosen.
    async with db.writer() as conn:
        service_id = (
            await conn.execute(select(services.c.id).where(services.c.host == sels[1].host))
        ).scalar_one()
        await conn.execute(
            update(service_heartbeats)
            .where(service_heartbeats.c.service_id == service_id)
            .values(last_seen_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=600))
        )
    with pytest.raises(exception.NoValidHost, match="host_down"):
        await manager.claim_alternate(RequestContext(), sels[1])
    moved = await manager.claim_alternate(RequestContext(), sels[2])
    assert (await _allocs(db))[ids[0]] == [moved.host]


async def test_decisions_are_logged_with_the_request_id(
    db: Database, manager: SchedulerManager, caplog: pytest.LogCaptureFixture
):
    await _fleet(db, 2)
    ctx = RequestContext()
    with caplog.at_level(logging.DEBUG, logger="nubes.scheduler"):
        (sel,) = await manager.select_destinations(ctx, _spec(), _uuids(1))
    (line,) = [r.getMessage() for r in caplog.records if ctx.request_id in r.getMessage()]
    assert sel[0].host in line and "select" in line and "claim" in line and " ms" in line


async def test_claims_never_exceed_capacity_in_one_process(db: Database, manager: SchedulerManager):
    import asyncio

    await _fleet(db, 3, vcpus=2, cpu_allocation_ratio=2.0)  # 4 slots each
    outcomes = await asyncio.gather(
        *(manager.select_destinations(RequestContext(), _spec(), _uuids(1)) for _ in range(20)),
        return_exceptions=True,
    )
    assert sum(not isinstance(o, BaseException) for o in outcomes) == 12
    assert all(
        isinstance(o, exception.NoValidHost) for o in outcomes if isinstance(o, BaseException)
    )
    async with db.reader() as conn:
        used = (await conn.execute(select(func.max(nodes_table.c.vcpus_used)))).scalar()
        count = (await conn.execute(select(func.count()).select_from(allocations))).scalar()
    assert used == 4 and count == 12


async def test_a_view_that_cannot_be_refreshed_places_nothing(
    db: Database, db_url: str, conf: cfg.ConfigOpts, tmp_path: Path
):
    conf.set_override("service_down_time", 2)
    conf.set_override("host_state_refresh_interval", 0.1, group="scheduler")
    manager = SchedulerManager(db, conf)
    try:
        await _fleet(db, 2)
        await manager.select_destinations(RequestContext(), _spec(), _uuids(1))
        # The database goes away: the view can no longer learn which hosts
        # are up, and by the time it is older than half service_down_time
        # it is not trusted to place anything.
        await db.dispose()
        path = make_url(db_url).database or ""
        shutil.move(path, tmp_path / "elsewhere.sqlite")
        os.mkdir(path)
        await asyncio.sleep(1.1)  # older than half service_down_time
        with pytest.raises(exception.NoValidHost, match="cannot read which hosts are up"):
            await manager.select_destinations(RequestContext(), _spec(), _uuids(1))
    finally:
        await manager.close()


async def test_every_host_silent_right_after_an_outage_is_transient(
    db: Database, manager: SchedulerManager
):
    """Regression: after a bus or conductor outage longer than service_down_time
    every host looked down until its next heartbeat, and builds that arrived
    then ended in ERROR with "No valid host". Silence of every host at once,
    with a recent newest heartbeat, is an outage: a transient error instead."""
    await create_hosts(db, [HostSpec("a", silent_for=90), HostSpec("b", silent_for=100)])
    with pytest.raises(exception.ComputeHostsSilent, match="newest report is 9"):
        await manager.select_destinations(RequestContext(), _spec(), _uuids(1))
    assert isinstance(exception.ComputeHostsSilent(down_time=1, age=1), exception.TRANSIENT_ERRORS)


async def test_hosts_silent_long_ago_or_one_by_one_are_down(
    db: Database, manager: SchedulerManager
):
    """Silence older than OUTAGE_GRACE x service_down_time is hosts that died."""
    await create_hosts(db, [HostSpec("a", silent_for=600), HostSpec("b", silent_for=900)])
    with pytest.raises(exception.NoValidHost):
        await manager.select_destinations(RequestContext(), _spec(), _uuids(1))
    # One of them reported lately: the newest heartbeat decides, an outage again.
    await create_hosts(db, [HostSpec("c", silent_for=70)])
    with pytest.raises(exception.ComputeHostsSilent):
        await manager.select_destinations(RequestContext(), _spec(), _uuids(1))
