"""RequestSpec and Selection: what is asked of the scheduler, and what it answers.

A RequestSpec carries everything the scheduler needs to place one or more
identical instances without reading the instances themselves: the flavor
(nested), image properties, availability zone, hints and the server group.
A Selection is one host for one instance; ``select_destinations`` returns,
per instance, the claimed host first and then its unclaimed alternates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from nubes.group_policy import DEFAULT_MAX_SERVER_PER_HOST, GROUP_POLICIES
from nubes.objects import base, fields
from nubes.objects.flavor import Flavor

#: Hint values that are lists travel joined by this (no uuid or host name holds it).
HINT_LIST_SEPARATOR = ","


def _hint_value(value: Any) -> str:
    if isinstance(value, list | tuple | set | frozenset):
        return HINT_LIST_SEPARATOR.join(str(v) for v in value)
    return str(value)


@base.register
class RequestSpec(base.VersionedObject):
    """What to place: ``num_instances`` instances of ``flavor`` for a project.

    ``scheduler_hints`` maps hint names to strings; a hint with several
    values (``different_host``) holds them joined by commas, see
    :meth:`hint_list`. ``force_hosts``/``force_nodes`` and
    ``requested_destination`` restrict the candidates to those names
    (an admin's explicit target); ``ignore_hosts`` removes hosts (a
    reschedule's failed ones).

    Version history:

    1.0: Initial version
    """

    VERSION = "1.0"

    instance_uuids = fields.List(fields.UUID(), default=[])
    project_id = fields.String(nullable=True, default=None)
    user_id = fields.String(nullable=True, default=None)
    flavor = fields.Object(Flavor, versions={"1.0": "1.0"})
    image_properties = fields.Dict(fields.String(), default={})
    availability_zone = fields.String(nullable=True, default=None)
    scheduler_hints = fields.Dict(fields.String(), default={})
    instance_group_uuid = fields.UUID(nullable=True, default=None)
    instance_group_policy = fields.Enum(GROUP_POLICIES, nullable=True, default=None)
    instance_group_members = fields.List(fields.UUID(), default=[])
    #: Hosts the caller knows members of the group are on (the scheduler adds
    #: what the database says).
    instance_group_hosts = fields.List(fields.String(), default=[])
    instance_group_max_server_per_host = fields.Integer(default=DEFAULT_MAX_SERVER_PER_HOST)
    num_instances = fields.Integer(default=1)
    ignore_hosts = fields.List(fields.String(), default=[])
    force_hosts = fields.List(fields.String(), default=[])
    force_nodes = fields.List(fields.String(), default=[])
    requested_destination = fields.String(nullable=True, default=None)

    @classmethod
    def from_components(
        cls,
        *,
        flavor: Flavor,
        scheduler_hints: Mapping[str, Any] | None = None,
        **values: Any,
    ) -> RequestSpec:
        """A spec from API-style pieces; list-valued hints are joined for the wire."""
        hints = {k: _hint_value(v) for k, v in (scheduler_hints or {}).items()}
        return cls(flavor=flavor, scheduler_hints=hints, **values)

    def hint(self, name: str) -> str | None:
        return self.scheduler_hints.get(name)

    def hint_list(self, name: str) -> list[str]:
        """A hint's values as a list ([] when absent)."""
        value = self.scheduler_hints.get(name)
        if not value:
            return []
        return [v.strip() for v in value.split(HINT_LIST_SEPARATOR) if v.strip()]

    @property
    def root_disk_gb(self) -> int:
        """Local disk one instance claims: root, ephemeral and swap (MiB, rounded up)."""
        flavor = self.flavor
        swap_gb = -(-flavor.swap // 1024) if flavor.swap else 0
        return flavor.root_gb + flavor.ephemeral_gb + swap_gb

    def with_instances(self, instance_uuids: Sequence[str]) -> RequestSpec:
        clone = self.obj_clone()
        clone.instance_uuids = list(instance_uuids)
        clone.num_instances = len(instance_uuids)
        return clone


@base.register
class Selection(base.VersionedObject):
    """One host for one instance: where it goes, and what was (or would be) claimed.

    ``claimed`` is True for the chosen host, whose resources are held for
    ``instance_uuid`` when the scheduler answers; alternates are False and
    are claimed later, if needed, through ``SchedulerAPI.claim_alternate``.

    Version history:

    1.0: Initial version
    """

    VERSION = "1.0"

    instance_uuid = fields.UUID()
    host = fields.String()
    nodename = fields.String()
    compute_node_uuid = fields.UUID()
    claimed = fields.Boolean(default=False)
    vcpus = fields.Integer(default=0)
    memory_mb = fields.Integer(default=0)
    disk_gb = fields.Integer(default=0)
    #: The node's generation after the claim (None for an unclaimed alternate).
    generation = fields.Integer(nullable=True, default=None)
    #: The scheduling policy that chose the host.
    policy = fields.String(nullable=True, default=None)
