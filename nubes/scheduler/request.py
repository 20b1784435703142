"""One scheduling request as the filters and weighers see it.

:class:`SchedulingRequest` wraps the :class:`~nubes.objects.request_spec.RequestSpec`
with what is derived from it once per request instead of once per host:
the amounts to claim, the server group's policy and where its members are
(from the database, plus the hosts chosen earlier in the same request), and
the hosts the ``same_host``/``different_host`` hints resolve to.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from nubes.objects.request_spec import RequestSpec

#: Hint naming the server group (Nova's ``group`` hint).
GROUP_HINT = "group"


@dataclasses.dataclass(slots=True)
class SchedulingRequest:
    spec: RequestSpec
    vcpus: int
    memory_mb: int
    disk_gb: int
    project_id: str | None
    availability_zone: str | None
    extra_specs: Mapping[str, str]
    image_properties: Mapping[str, str]
    group_uuid: str | None = None
    group_policy: str | None = None
    max_server_per_host: int = 1
    #: The group is a row of the database (its claims are checked there).
    group_in_db: bool = False
    #: host -> members of the group placed there (database + this request so far).
    group_hosts: dict[str, int] = dataclasses.field(default_factory=dict)
    #: Hosts of the ``same_host`` hint's instances (None: hint not given).
    same_hosts: set[str] | None = None
    different_hosts: set[str] = dataclasses.field(default_factory=set)

    @classmethod
    def from_spec(cls, spec: RequestSpec) -> SchedulingRequest:
        flavor = spec.flavor
        group_hosts: dict[str, int] = {}
        for host in spec.instance_group_hosts:
            group_hosts[host] = group_hosts.get(host, 0) + 1
        return cls(
            spec=spec,
            vcpus=flavor.vcpus,
            memory_mb=flavor.memory_mb,
            disk_gb=spec.root_disk_gb,
            project_id=spec.project_id,
            availability_zone=spec.availability_zone,
            extra_specs=flavor.extra_specs,
            image_properties=spec.image_properties,
            group_uuid=spec.instance_group_uuid or spec.hint(GROUP_HINT),
            group_policy=spec.instance_group_policy,
            max_server_per_host=spec.instance_group_max_server_per_host,
            group_hosts=group_hosts,
        )

    def placed(self, host: str) -> None:
        """An instance of this request went to ``host`` (it joins the group there)."""
        if self.group_policy is not None:
            self.group_hosts[host] = self.group_hosts.get(host, 0) + 1
