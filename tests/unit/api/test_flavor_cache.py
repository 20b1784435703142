"""The flavors API processes keep for boots (nubes/api/flavor_cache.py):
every change to a flavor reaches the next boot, in every API process."""

from __future__ import annotations

from typing import Any

from nubes.api import flavor_cache
from nubes.api.app import build_app
from nubes.api.flavor_cache import FlavorCache
from nubes.api.state import ApiState
from nubes.db.api import flavors as flavors_db
from nubes.db.api import instances as instances_db
from nubes.db.engine import Database
from tests.unit.api.conftest import ApiHarness
from tests.unit.api.test_servers import URL, body, cloud, login  # noqa: F401

FLAVORS = "/compute/v2.1/flavors"


async def _boot(cloud: ApiHarness, flavor: str = "1") -> Any:  # noqa: F811
    c = await login(cloud, "demo", "2.61")
    async with c:
        return await c.post(URL, json=body(cloud, flavorRef=flavor, networks="none"))


async def test_a_deleted_flavor_is_refused_at_the_next_boot(cloud: ApiHarness) -> None:  # noqa: F811
    assert (await _boot(cloud)).status_code == 202  # kept now
    async with await login(cloud, "admin") as c:
        assert (await c.delete(f"{FLAVORS}/1")).status_code == 202
    r = await _boot(cloud)
    assert r.status_code == 400 and "Invalid flavorRef" in r.text


async def test_access_taken_away_is_refused_at_the_next_boot(cloud: ApiHarness) -> None:  # noqa: F811
    demo = cloud.projects["demo"]
    action = f"{FLAVORS}/p/action"
    assert (await _boot(cloud, "p")).status_code == 400  # private, granted to nobody
    async with await login(cloud, "admin") as c:
        r = await c.post(action, json={"addTenantAccess": {"tenant": demo}})
        assert r.status_code == 200
    assert (await _boot(cloud, "p")).status_code == 202
    async with await login(cloud, "admin") as c:
        r = await c.post(action, json={"removeTenantAccess": {"tenant": demo}})
        assert r.status_code == 200
    assert (await _boot(cloud, "p")).status_code == 400


async def test_changed_extra_specs_reach_the_next_boot(cloud: ApiHarness) -> None:  # noqa: F811
    assert (await _boot(cloud)).status_code == 202
    async with await login(cloud, "admin") as c:
        r = await c.put(
            f"{FLAVORS}/1/os-extra_specs/hw:cpu_policy", json={"hw:cpu_policy": "dedicated"}
        )
        assert r.status_code == 200
    r = await _boot(cloud)
    assert r.status_code == 202
    async with cloud.state.db.reader() as conn:
        row = await instances_db.get_by_uuid(conn, r.json()["server"]["id"])
    assert row["flavor"]["extra_specs"] == {"hw:cpu_policy": "dedicated"}


async def test_a_change_made_through_another_api_process_is_seen(cloud: ApiHarness) -> None:  # noqa: F811
    """Two API processes on one database, each with its own cache: a flavor
    deleted through one is refused by the other at its next boot."""
    other_db = Database(cloud.state.db.url)
    other = ApiHarness(ApiState(conf=cloud.state.conf, db=other_db), None, cloud.projects)
    other.app = build_app(other.state)
    try:
        assert (await _boot(cloud)).status_code == 202  # kept by the first process
        async with await other.login("admin") as c:
            assert (await c.delete(f"{FLAVORS}/1")).status_code == 202
        assert (await _boot(cloud)).status_code == 400
    finally:
        await other_db.dispose()


async def test_what_a_caller_changes_is_not_kept(cloud: ApiHarness) -> None:  # noqa: F811
    cache = FlavorCache()
    async with cloud.state.db.reader() as conn:
        row = await cache.get_by_flavor_id(conn, "1")
        row["extra_specs"]["x"] = "y"
        row["projects"].append("someone")
        row["disabled"] = True
        again = await cache.get_by_flavor_id(conn, "1")
    assert again["extra_specs"] == {"hw:cpu_policy": "shared"}
    assert again["projects"] == [] and not again["disabled"]


async def test_a_row_read_under_an_older_generation_is_not_kept(
    cloud: ApiHarness,  # noqa: F811
) -> None:
    """A lookup that raced a write (it read the counter before the write's
    commit, and another lookup read it after) serves its row but keeps nothing."""
    cache = FlavorCache()
    db = cloud.state.db
    async with db.reader() as conn:
        await cache.get_by_flavor_id(conn, "1")
    async with db.writer() as conn:
        row = await flavors_db.get_by_flavor_id(conn, "1")
        await flavors_db.extra_specs_update_or_create(conn, row["id"], {"hw:cpu_policy": "x"})
    async with db.reader() as conn:
        assert (await cache.get_by_flavor_id(conn, "1"))["extra_specs"] == {"hw:cpu_policy": "x"}
    newest = cache._generation
    assert newest is not None
    cache._generation = newest + 1  # another lookup saw a later write
    cache._rows = {}
    async with db.reader() as conn:
        await cache.get_by_flavor_id(conn, "1")
    assert cache._rows == {}


async def test_a_write_that_bumps_nothing_is_seen_after_keep_seconds(
    cloud: ApiHarness,  # noqa: F811
    monkeypatch: Any,
) -> None:
    """An API process of an older release writes flavors without bumping the
    counter (rolling upgrade): rows are kept KEEP_SECONDS at most."""
    from sqlalchemy import update

    from nubes.db.models import flavors

    monkeypatch.setattr(flavor_cache, "KEEP_SECONDS", 0.0)
    assert (await _boot(cloud)).status_code == 202
    async with cloud.state.db.writer() as conn:
        await conn.execute(update(flavors).where(flavors.c.flavorid == "1").values(disabled=True))
    r = await _boot(cloud)
    assert r.status_code == 400 and "Invalid flavorRef" in r.text
