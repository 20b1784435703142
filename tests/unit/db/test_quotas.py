"""Quota limits and the quota lock: concurrent requests of a project never overshoot.

Runs on SQLite here and on PostgreSQL and MariaDB from tests/integration/db.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from nubes import config, exception
from nubes.api import quotas
from nubes.api.state import ApiState
from nubes.context import RequestContext
from nubes.db.api import flavors as flavors_db
from nubes.db.api import groups as groups_db
from nubes.db.api import instances as instances_db
from nubes.db.api import quotas as quotas_db
from nubes.db.engine import Database
from tests.unit.db.factories import make_instance

IMAGE = {"id": "0d3c2c2e-4c1a-4b9e-9c51-52f0d1f3a001", "properties": {}}
PROJECT = "p-race"


def _state(db: Database, **limits: int) -> ApiState:
    conf = config.new_config()
    conf([])
    for name, value in limits.items():
        conf.set_override(name, value, group="quota")
    return ApiState(conf=conf, db=db)


async def _flavor(db: Database) -> dict[str, Any]:
    async with db.writer() as conn:
        return await flavors_db.create(
            conn, {"flavorid": "t", "name": "tiny", "vcpus": 1, "memory_mb": 64, "root_gb": 1}
        )


def _ctxt(n: int) -> RequestContext:
    return RequestContext(project_id=PROJECT, user_id=f"user-{n % 5}", roles=["member"])


async def test_fifty_concurrent_creates_of_one_project_never_overshoot(db: Database) -> None:
    state = _state(db, instances=10)
    flavor = await _flavor(db)
    servers = state.servers_api()
    results = await asyncio.gather(
        *(
            servers.create_servers(_ctxt(n), name=f"vm{n}", flavor=flavor, image=IMAGE)
            for n in range(50)
        ),
        return_exceptions=True,
    )
    made = [r for r in results if isinstance(r, list)]
    refused = [r for r in results if isinstance(r, exception.TooManyInstances)]
    assert len(made) == 10 and len(refused) == 40, [
        r for r in results if not isinstance(r, list | exception.TooManyInstances)
    ]
    assert all(len(r) == 1 for r in made)
    assert all(r.code == 403 for r in refused)
    async with db.reader() as conn:
        assert (await quotas_db.usage(conn, PROJECT))["instances"] == 10


async def test_concurrent_min_max_creates_fill_the_quota_exactly(db: Database) -> None:
    state = _state(db, instances=25, cores=-1)
    flavor = await _flavor(db)
    servers = state.servers_api()
    results = await asyncio.gather(
        *(
            servers.create_servers(
                _ctxt(n), name=f"vm{n}", flavor=flavor, image=IMAGE, min_count=2, count=4
            )
            for n in range(20)
        ),
        return_exceptions=True,
    )
    made = [r for r in results if isinstance(r, list)]
    assert all(isinstance(r, list | exception.TooManyInstances) for r in results), results
    # Six get 4 each; the one left is fewer than min_count, so the rest are refused.
    assert sorted(len(r) for r in made) == [4] * 6
    async with db.reader() as conn:
        assert (await quotas_db.usage(conn, PROJECT))["instances"] == 24


async def test_fifty_concurrent_server_groups_never_overshoot(db: Database) -> None:
    state = _state(db, server_groups=10)

    async def create_group(n: int) -> dict[str, Any]:
        async with db.writer() as conn:
            await quotas.check_server_group(
                conn, state.conf, project_id=PROJECT, user_id=f"user-{n % 5}"
            )
            return await groups_db.group_create(
                conn, {"name": f"g{n}", "project_id": PROJECT, "policy": "affinity"}
            )

    results = await asyncio.gather(*(create_group(n) for n in range(50)), return_exceptions=True)
    assert sum(isinstance(r, dict) for r in results) == 10
    assert sum(isinstance(r, exception.ServerGroupLimitExceeded) for r in results) == 40
    async with db.reader() as conn:
        assert (await quotas_db.usage(conn, PROJECT))["server_groups"] == 10


async def test_limits_resolve_config_class_project_then_user(db: Database) -> None:
    conf = _state(db, instances=7).conf
    async with db.writer() as conn:
        assert (await quotas.effective_limits(conn, conf, "p", "u"))["instances"] == 7
        await quotas_db.class_set(conn, quotas.DEFAULT_CLASS, {"instances": 6})
        assert (await quotas.effective_limits(conn, conf, "p", "u"))["instances"] == 6
        await quotas_db.limits_set(conn, "p", {"instances": 5})
        assert (await quotas.effective_limits(conn, conf, "p", "u"))["instances"] == 5
        await quotas_db.limits_set(conn, "p", {"instances": 4}, user_id="u")
        assert (await quotas.effective_limits(conn, conf, "p", "u"))["instances"] == 4
        assert (await quotas.effective_limits(conn, conf, "p", "v"))["instances"] == 5
        assert (await quotas.effective_limits(conn, conf, "q"))["instances"] == 6
        # Setting again updates the row in place.
        await quotas_db.limits_set(conn, "p", {"instances": 3}, user_id="u")
        assert await quotas_db.limits_get(conn, "p", "u") == {"instances": 3}
        assert await quotas_db.limits_delete(conn, "p") == 2
        assert (await quotas.effective_limits(conn, conf, "p", "u"))["instances"] == 6


async def test_limit_levels_reads_each_level_apart_in_one_statement(db: Database) -> None:
    """The one read a boot's quota check makes: the class's, the project's
    and the user's rows, each level on its own, none of another project,
    user or class."""
    async with db.writer() as conn:
        await quotas_db.class_set(conn, quotas.DEFAULT_CLASS, {"instances": 9, "cores": 8})
        await quotas_db.class_set(conn, "other-class", {"instances": 1})
        await quotas_db.limits_set(conn, "p", {"instances": 5})
        await quotas_db.limits_set(conn, "p", {"cores": 3}, user_id="u")
        await quotas_db.limits_set(conn, "p", {"ram": 7}, user_id="v")
        await quotas_db.limits_set(conn, "q", {"instances": 2})
    async with db.reader() as conn:
        both = await quotas_db.limit_levels(conn, quotas.DEFAULT_CLASS, "p", "u")
        project_only = await quotas_db.limit_levels(conn, quotas.DEFAULT_CLASS, "p")
        nothing_set = await quotas_db.limit_levels(conn, "none", "nobody", "no-one")
    assert both == ({"instances": 9, "cores": 8}, {"instances": 5}, {"cores": 3})
    assert project_only == ({"instances": 9, "cores": 8}, {"instances": 5}, {})
    assert nothing_set == ({}, {}, {})


@pytest.mark.parametrize(("used", "allowed"), [(0, True), (2, True), (3, False)])
async def test_key_pairs_check_counts_the_users_key_pairs(
    db: Database, used: int, allowed: bool
) -> None:
    conf = _state(db, key_pairs=3).conf
    async with db.writer() as conn:
        await quotas_db.lock_project(conn, "p")
        if allowed:
            await quotas.check_key_pairs(conn, conf, project_id="p", user_id="u", used=used)
        else:
            with pytest.raises(exception.KeypairLimitExceeded) as err:
                await quotas.check_key_pairs(conn, conf, project_id="p", user_id="u", used=used)
            assert err.value.code == 403
            assert err.value.message == "Maximum number of key pairs exceeded"


async def test_a_user_key_pair_limit_overrides_the_projects(db: Database) -> None:
    conf = _state(db, key_pairs=100).conf
    async with db.writer() as conn:
        await quotas_db.limits_set(conn, "p", {"key_pairs": 1}, user_id="u")
        with pytest.raises(exception.KeypairLimitExceeded):
            await quotas.check_key_pairs(conn, conf, project_id="p", user_id="u", used=1)
        await quotas.check_key_pairs(conn, conf, project_id="p", user_id="v", used=1)


async def test_usage_counts_live_instances_groups_and_resizes_in_progress(db: Database) -> None:
    async with db.writer() as conn:
        await make_instance(conn, project_id="q", user_id="u", vcpus=2, memory_mb=1024)
        await make_instance(
            conn,
            project_id="q",
            user_id="v",
            vcpus=4,
            memory_mb=2048,
            old_flavor={"vcpus": 4, "memory_mb": 2048},
            new_flavor={"vcpus": 8, "memory_mb": 1024},
        )
        # A downsize that finished: the old, larger flavor counts until confirmed.
        await make_instance(
            conn,
            project_id="q",
            user_id="v",
            vcpus=1,
            memory_mb=256,
            old_flavor={"vcpus": 2, "memory_mb": 512},
            new_flavor={"vcpus": 1, "memory_mb": 256},
        )
        gone = await make_instance(conn, project_id="q", vcpus=16, memory_mb=4096)
        await instances_db.destroy(conn, gone["uuid"])
        await make_instance(conn, project_id="other", vcpus=1, memory_mb=1)
        await groups_db.group_create(
            conn, {"project_id": "q", "user_id": "u", "policy": "affinity"}
        )
        # A resize to 8 vCPUs counts 8 until it ends; its smaller RAM counts the current 2048.
        assert await quotas_db.usage(conn, "q") == {
            "instances": 3,
            "cores": 12,
            "ram": 3584,
            "server_groups": 1,
        }
        assert await quotas_db.usage(conn, "q", "u") == {
            "instances": 1,
            "cores": 2,
            "ram": 1024,
            "server_groups": 1,
        }
