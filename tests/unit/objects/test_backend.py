"""The object backend seam: no database in nubes.objects, a clear refusal
without a backend, row loading, and Service.is_up (no database needed)."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from typing import Any

import pytest

from nubes import exception
from nubes.context import RequestContext
from nubes.objects import backend
from nubes.objects.instance import Instance, _expected
from nubes.objects.service import Service

NOW = dt.datetime(2024, 5, 1, 12, 0, 0, tzinfo=dt.UTC)


def test_objects_never_import_the_database() -> None:
    code = (
        "import sys, nubes.objects, nubes.objects.indirection, nubes.objects.backend\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'alembic')"
        " or m == 'nubes.db' or m.startswith('nubes.db.'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_get_without_a_backend_says_what_to_do() -> None:
    backend.uninstall()
    with pytest.raises(exception.DatabaseAccessForbidden) as err:
        backend.get()
    message = str(err.value)
    assert "no database access" in message
    assert "must go through the conductor" in message
    assert err.value.kwargs["service"]


async def test_remotable_methods_without_a_backend_refuse() -> None:
    inst = Instance(uuid="1b4e28ba-2fa1-41d2-883f-0016d3cca427")
    inst.progress = 3
    with pytest.raises(exception.DatabaseAccessForbidden):
        await inst.save(RequestContext())


def test_install_and_uninstall() -> None:
    fake: Any = object()
    backend.install(fake)
    try:
        assert backend.get() is fake
    finally:
        backend.uninstall()
    with pytest.raises(exception.DatabaseAccessForbidden):
        backend.get()


def test_apply_row_sets_known_plain_fields_only() -> None:
    row = {
        "id": 7,
        "uuid": "1b4e28ba-2fa1-41d2-883f-0016d3cca427",
        "deleted": 7,
        "power_state": None,  # NULL column, non-nullable field with a default
        "scheduled_at": NOW,  # a column the object does not have
        "flavor": {"name": "x"},  # nested: left to the object
    }
    inst = backend.from_row(Instance, row)
    assert inst.id == 7 and inst.deleted is True and inst.power_state == 0
    assert not inst.obj_attr_is_set("flavor")
    assert inst.obj_what_changed() == set()


def test_apply_row_makes_non_canonical_values_canonical() -> None:
    """The one-call check of a row passes only canonical values: a UUID in
    capitals and a datetime at another offset are fixed up after it, as the
    wire decoder does, and a value it refuses takes the coercing path."""
    plus_two = dt.timezone(dt.timedelta(hours=2))
    row = {
        "uuid": "1B4E28BA-2FA1-41D2-883F-0016D3CCA427",
        "launched_at": dt.datetime(2026, 1, 1, 12, 0, tzinfo=plus_two),
        "memory_mb": "512",  # text an Integer field accepts by coercion
        "host": "h1",
    }
    inst = backend.from_row(Instance, row)
    assert inst.uuid == "1b4e28ba-2fa1-41d2-883f-0016d3cca427"
    assert inst.launched_at == dt.datetime(2026, 1, 1, 10, 0, tzinfo=dt.UTC)
    assert inst.launched_at.tzinfo is dt.UTC
    assert inst.memory_mb == 512 and inst.host == "h1"
    assert inst.obj_what_changed() == set()


def test_from_row_makes_what_coercing_each_field_makes() -> None:
    """The loaded struct becomes the object's storage: the same fields,
    defaults and (no) changes as ``cls()``, ``update`` and a reset."""
    row = {
        "id": 3,
        "uuid": "1b4e28ba-2fa1-41d2-883f-0016d3cca427",
        "host": "h1",
        "vm_state": "active",
        "launched_at": NOW,
        "metadata": {"k": "v"},
        "deleted": 0,
    }
    fast = backend.from_row(Instance, row)
    slow = Instance()
    slow.update({**row, "deleted": False})
    slow.obj_reset_changes()
    assert fast.obj_to_primitive() == slow.obj_to_primitive()
    assert fast.obj_what_changed() == set()
    fast.metadata["k2"] = "v2"  # a container changed in place is still seen
    assert fast.obj_what_changed() == {"metadata"}


def test_apply_row_on_a_loaded_object_keeps_other_fields_and_records_changes() -> None:
    inst = Instance(uuid="1b4e28ba-2fa1-41d2-883f-0016d3cca427", host="h1")
    inst.obj_reset_changes()
    backend.apply_row(inst, {"node": "n1", "vm_state": "active"})
    assert (inst.host, inst.node, inst.vm_state) == ("h1", "n1", "active")
    assert inst.obj_what_changed() == {"node", "vm_state"}


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("memory_mb", "lots"),
        ("launched_at", dt.datetime(2026, 1, 1)),  # naive: no time zone
        ("uuid", "not-a-uuid"),
    ],
)
def test_apply_row_refuses_a_bad_value_with_the_field_error(column: str, value: Any) -> None:
    with pytest.raises(exception.ObjectFieldError, match=column):
        backend.from_row(Instance, {column: value})


def test_expected_states_are_normalised() -> None:
    assert _expected("x", None) is None
    assert _expected("x", "active") == ["active"]
    assert _expected("x", ("spawning", None)) == ["spawning", None]
    with pytest.raises(exception.ValidationError):
        _expected("x", 5)
    with pytest.raises(exception.ValidationError):
        _expected("x", [1])


def _service(**values: Any) -> Service:
    return Service(host="h", binary="nubes-compute", **values)


@pytest.mark.parametrize(
    ("values", "now", "up"),
    [
        ({"last_seen_up": NOW}, NOW, True),
        ({"last_seen_up": NOW}, NOW + dt.timedelta(seconds=60), True),  # exactly the limit
        ({"last_seen_up": NOW}, NOW + dt.timedelta(seconds=60, microseconds=1), False),
        ({"last_seen_up": NOW}, NOW - dt.timedelta(seconds=30), True),  # clock skew
        ({"last_seen_up": NOW}, NOW - dt.timedelta(seconds=61), False),
        ({"last_seen_up": NOW, "forced_down": True}, NOW, False),
        ({"created_at": NOW}, NOW + dt.timedelta(seconds=10), True),  # not reported yet
        ({"created_at": NOW}, NOW + dt.timedelta(seconds=61), False),
        ({}, NOW, False),  # nothing to go by
    ],
)
def test_service_is_up(values: dict[str, Any], now: dt.datetime, up: bool) -> None:
    assert _service(**values).is_up(60, now=now) is up


def test_service_is_up_defaults_to_the_current_time() -> None:
    assert _service(last_seen_up=dt.datetime.now(dt.UTC)).is_up(60)
    assert not _service(last_seen_up=NOW).is_up(60)
