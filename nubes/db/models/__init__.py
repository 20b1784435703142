"""The nubes schema as SQLAlchemy models (see :mod:`nubes.db.models.base` for conventions).

Query code uses the ``Table`` objects (``Instance.__table__`` or the names
below) with Core statements; the declarative classes exist to give the
schema one typed, readable definition that migrations are checked against.
"""

from __future__ import annotations

from sqlalchemy import Table

from nubes.db.models.base import (
    NOT_DELETED,
    SHADOW_PREFIX,
    Base,
    is_soft_deletable,
    make_shadow_table,
    shadow_name,
)
from nubes.db.models.compute import (
    Aggregate,
    AggregateHost,
    AggregateMetadata,
    Allocation,
    ComputeNode,
    Generation,
    QueueSample,
    Service,
    ServiceHeartbeat,
)
from nubes.db.models.consoles import ConsoleAuthToken
from nubes.db.models.flavors import (
    Flavor,
    FlavorExtraSpec,
    FlavorProject,
    InstanceGroup,
    InstanceGroupMember,
)
from nubes.db.models.identity import (
    DEFAULT_DOMAIN_ID,
    GLOBAL_ROLE_DOMAIN,
    ApplicationCredential,
    Assignment,
    CatalogService,
    Credential,
    Domain,
    Endpoint,
    Group,
    GroupMember,
    Image,
    ImageMember,
    Project,
    ProjectTag,
    Region,
    Role,
    RoleInference,
    Token,
    User,
)
from nubes.db.models.image_catalog import (
    ImageTask,
    MetadefNamespace,
    MetadefNamespaceResourceType,
    MetadefObject,
    MetadefProperty,
    MetadefResourceType,
    MetadefTag,
)
from nubes.db.models.instances import (
    ConductorTask,
    Instance,
    InstanceAction,
    InstanceActionEvent,
    InstanceFault,
    Migration,
    Tag,
)
from nubes.db.models.network import (
    DefaultSecurityGroup,
    FloatingIP,
    InstanceNetworkRequest,
    IPAllocation,
    KeyPair,
    Network,
    Port,
    PortSecurityGroup,
    Router,
    SecurityGroup,
    SecurityGroupRule,
    Subnet,
)
from nubes.db.models.quotas import Quota, QuotaClass, QuotaLock

metadata = Base.metadata


def _table(model: type[Base]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


services = _table(Service)
queue_samples = _table(QueueSample)
service_heartbeats = _table(ServiceHeartbeat)
compute_nodes = _table(ComputeNode)
generations = _table(Generation)
allocations = _table(Allocation)
aggregates = _table(Aggregate)
aggregate_hosts = _table(AggregateHost)
aggregate_metadata = _table(AggregateMetadata)
instances = _table(Instance)
instance_faults = _table(InstanceFault)
instance_actions = _table(InstanceAction)
instance_actions_events = _table(InstanceActionEvent)
migrations = _table(Migration)
conductor_tasks = _table(ConductorTask)
tags = _table(Tag)
flavors = _table(Flavor)
flavor_extra_specs = _table(FlavorExtraSpec)
flavor_projects = _table(FlavorProject)
instance_groups = _table(InstanceGroup)
instance_group_members = _table(InstanceGroupMember)
projects = _table(Project)
project_tags = _table(ProjectTag)
users = _table(User)
roles = _table(Role)
role_inferences = _table(RoleInference)
credentials = _table(Credential)
assignments = _table(Assignment)
domains = _table(Domain)
groups = _table(Group)
group_members = _table(GroupMember)
application_credentials = _table(ApplicationCredential)
tokens = _table(Token)
regions = _table(Region)
catalog_services = _table(CatalogService)
endpoints = _table(Endpoint)
images = _table(Image)
image_members = _table(ImageMember)
quota_classes = _table(QuotaClass)
quotas = _table(Quota)
quota_locks = _table(QuotaLock)
networks = _table(Network)
subnets = _table(Subnet)
ports = _table(Port)
ip_allocations = _table(IPAllocation)
security_groups = _table(SecurityGroup)
default_security_groups = _table(DefaultSecurityGroup)
security_group_rules = _table(SecurityGroupRule)
port_security_groups = _table(PortSecurityGroup)
key_pairs = _table(KeyPair)
instance_network_requests = _table(InstanceNetworkRequest)
console_auth_tokens = _table(ConsoleAuthToken)
routers = _table(Router)
floatingips = _table(FloatingIP)
metadef_namespaces = _table(MetadefNamespace)
metadef_resource_types = _table(MetadefResourceType)
metadef_namespace_resource_types = _table(MetadefNamespaceResourceType)
metadef_objects = _table(MetadefObject)
metadef_properties = _table(MetadefProperty)
metadef_tags = _table(MetadefTag)
image_tasks = _table(ImageTask)

#: Archive twins, keyed by the live table's name; part of ``metadata`` so
#: the migrated schema is checked against them too.
SHADOW_TABLES: dict[str, Table] = {
    table.name: make_shadow_table(table, metadata)
    for table in list(metadata.sorted_tables)
    if is_soft_deletable(table)
}

__all__ = [
    "DEFAULT_DOMAIN_ID",
    "GLOBAL_ROLE_DOMAIN",
    "NOT_DELETED",
    "SHADOW_PREFIX",
    "SHADOW_TABLES",
    "Aggregate",
    "AggregateHost",
    "AggregateMetadata",
    "Allocation",
    "ApplicationCredential",
    "Assignment",
    "Base",
    "ComputeNode",
    "ConductorTask",
    "ConsoleAuthToken",
    "DefaultSecurityGroup",
    "Domain",
    "Flavor",
    "FlavorExtraSpec",
    "FlavorProject",
    "FloatingIP",
    "Generation",
    "Group",
    "GroupMember",
    "IPAllocation",
    "Image",
    "ImageMember",
    "ImageTask",
    "Instance",
    "InstanceAction",
    "InstanceActionEvent",
    "InstanceFault",
    "InstanceGroup",
    "InstanceGroupMember",
    "InstanceNetworkRequest",
    "KeyPair",
    "MetadefNamespace",
    "MetadefNamespaceResourceType",
    "MetadefObject",
    "MetadefProperty",
    "MetadefResourceType",
    "MetadefTag",
    "Migration",
    "Network",
    "Port",
    "PortSecurityGroup",
    "Project",
    "QueueSample",
    "Quota",
    "QuotaClass",
    "QuotaLock",
    "Role",
    "Router",
    "SecurityGroup",
    "SecurityGroupRule",
    "Service",
    "ServiceHeartbeat",
    "Subnet",
    "Tag",
    "Token",
    "User",
    "aggregate_hosts",
    "aggregate_metadata",
    "aggregates",
    "allocations",
    "application_credentials",
    "assignments",
    "compute_nodes",
    "conductor_tasks",
    "console_auth_tokens",
    "credentials",
    "default_security_groups",
    "domains",
    "flavor_extra_specs",
    "flavor_projects",
    "flavors",
    "floatingips",
    "generations",
    "group_members",
    "groups",
    "image_members",
    "image_tasks",
    "images",
    "instance_actions",
    "instance_actions_events",
    "instance_faults",
    "instance_group_members",
    "instance_groups",
    "instance_network_requests",
    "instances",
    "ip_allocations",
    "key_pairs",
    "metadata",
    "metadef_namespace_resource_types",
    "metadef_namespaces",
    "metadef_objects",
    "metadef_properties",
    "metadef_resource_types",
    "metadef_tags",
    "migrations",
    "networks",
    "port_security_groups",
    "ports",
    "projects",
    "queue_samples",
    "quota_classes",
    "quota_locks",
    "quotas",
    "role_inferences",
    "roles",
    "routers",
    "security_group_rules",
    "security_groups",
    "service_heartbeats",
    "services",
    "shadow_name",
    "subnets",
    "tags",
    "tokens",
    "users",
]
