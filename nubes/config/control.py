"""Options of the control plane's workers: the conductor, the scheduler and quotas."""

from __future__ import annotations

from oslo_config import cfg

conductor_opts: list[cfg.Opt] = [
    cfg.IntOpt(
        "workers",
        default=1,
        min=1,
        help="Conductor processes `nubes conductor` runs under one parent (needs rabbit://).",
    ),
    cfg.StrOpt("topic", default="conductor", help="RPC topic of the conductor."),
    cfg.ListOpt(
        "controller_identities",
        default=[],
        help="Bus identities (broker users) to treat as controller services besides "
        "those named conductor.*, scheduler.*, api.* and manage.*. Compute hosts are "
        "compute.<host>; any other identity is refused.",
    ),
    cfg.IntOpt(
        "max_node_vcpus",
        default=4096,
        min=0,
        help="Largest vcpus a compute host may report for one of its nodes; a bigger "
        "(or negative) value is refused, so a compromised host cannot draw the "
        "scheduler with a phantom giant node.",
    ),
    cfg.IntOpt(
        "max_node_memory_mb",
        default=64 * 1024 * 1024,
        min=0,
        help="Largest memory_mb a compute host may report for one of its nodes.",
    ),
    cfg.IntOpt(
        "max_node_local_gb",
        default=1024 * 1024,
        min=0,
        help="Largest local_gb a compute host may report for one of its nodes.",
    ),
    cfg.FloatOpt(
        "initial_cpu_allocation_ratio",
        default=16.0,
        min=0.0,
        help="CPU allocation ratio a compute node gets when its host registers it. "
        "The operator's, never the host's: a host that sends one is refused.",
    ),
    cfg.FloatOpt(
        "initial_ram_allocation_ratio",
        default=1.5,
        min=0.0,
        help="RAM allocation ratio a compute node gets when its host registers it.",
    ),
    cfg.FloatOpt(
        "initial_disk_allocation_ratio",
        default=1.0,
        min=0.0,
        help="Disk allocation ratio a compute node gets when its host registers it.",
    ),
    cfg.FloatOpt(
        "task_lease_seconds",
        default=30.0,
        min=1.0,
        help="Lease a conductor takes on a task it works on, renewed while it works; "
        "another conductor resumes the task once the lease runs out.",
    ),
    cfg.FloatOpt(
        "task_poll_interval",
        default=1.0,
        min=0.01,
        help="Seconds between a conductor's looks for tasks it was not told about "
        "(created or reported through another conductor, or whose lease expired).",
    ),
    cfg.FloatOpt(
        "drain_timeout",
        default=10.0,
        min=0.0,
        help="Seconds a conductor stopped by SIGTERM gives the task steps it works on "
        "to end before it hands them over to the other conductors (it takes no new "
        "work meanwhile, and hands steps waiting for a compute host over at once).",
    ),
    cfg.IntOpt(
        "task_concurrency",
        default=512,
        min=1,
        help="Tasks one conductor process drives at the same time.",
    ),
    cfg.FloatOpt(
        "compute_step_timeout",
        default=600.0,
        min=0.1,
        help="Seconds a task waits for a compute host to report a step (a spawn, a "
        "power action) before counting it as that host's failure.",
    ),
    cfg.FloatOpt(
        "build_deadline",
        default=3600.0,
        min=0.1,
        help="Seconds a build may take from request to ACTIVE, reschedules included; "
        "past it the build is rolled back and the instance goes to ERROR with a fault.",
    ),
    cfg.FloatOpt(
        "task_deadline",
        default=1800.0,
        min=0.1,
        help="Seconds a delete, stop, start or reboot may take before it is rolled back "
        "with a fault.",
    ),
]

scheduler_opts: list[cfg.Opt] = [
    cfg.IntOpt(
        "max_attempts",
        default=3,
        min=1,
        help="Hosts tried for one instance: the chosen one plus alternates.",
    ),
    cfg.IntOpt(
        "workers",
        default=1,
        min=1,
        help="Scheduler processes `nubes scheduler` runs under one parent (needs rabbit://).",
    ),
    cfg.FloatOpt(
        "host_state_refresh_interval",
        default=1.0,
        min=0.05,
        help="Seconds between incremental refreshes of a scheduler's in-memory view of "
        "the hosts (changed compute nodes, service liveness, aggregates). The view only "
        "guides the choice: every claim is re-checked by the database.",
    ),
    cfg.FloatOpt(
        "host_state_change_margin",
        default=2.0,
        min=0.0,
        help="Seconds before the previous refresh that the next one re-reads changes "
        "from, covering clock skew between writers and transactions that committed late.",
    ),
    cfg.IntOpt(
        "max_claim_attempts",
        default=32,
        min=1,
        help="Hosts one instance tries to claim, best first, before the request fails "
        "with NoValidHost because other schedulers took the room first.",
    ),
    cfg.ListOpt(
        "policies",
        default=[],
        help="Named scheduling policies, tried in order; each is configured in a "
        "[scheduler_policy_NAME] section (enabled_filters, weigher multipliers, match). "
        "The first whose match rule fits a request schedules it.",
    ),
    cfg.StrOpt(
        "default_policy",
        default="default",
        help="Policy used when no policy's match rule fits; 'default' is the one built "
        "from [filter_scheduler], any other name must be listed in policies.",
    ),
]

filter_scheduler_opts: list[cfg.Opt] = [
    cfg.ListOpt(
        "enabled_filters",
        default=[
            "ComputeFilter",
            "AvailabilityZoneFilter",
            "RamFilter",
            "CoreFilter",
            "DiskFilter",
            "AggregateMultiTenancyIsolation",
            "AggregateInstanceExtraSpecsFilter",
            "ImagePropertiesFilter",
            "ServerGroupAntiAffinityFilter",
            "ServerGroupAffinityFilter",
            "SameHostFilter",
            "DifferentHostFilter",
        ],
        help="Filters a host must pass, in the order they run.",
    ),
    cfg.FloatOpt(
        "ram_weight_multiplier",
        default=1.0,
        help="Weight of free RAM; positive spreads instances, negative stacks them.",
    ),
    cfg.FloatOpt(
        "cpu_weight_multiplier",
        default=1.0,
        help="Weight of free vCPUs; positive spreads, negative stacks.",
    ),
    cfg.FloatOpt(
        "disk_weight_multiplier",
        default=1.0,
        help="Weight of free disk; positive spreads, negative stacks.",
    ),
    cfg.FloatOpt(
        "cpu_utilization_weight_multiplier",
        default=-1.0,
        help="Weight of the CPU utilisation hosts report (metrics cpu.percent); "
        "negative prefers idle hosts.",
    ),
    cfg.FloatOpt(
        "num_instances_weight_multiplier",
        default=0.0,
        help="Weight of the number of instances on a host; negative prefers emptier hosts.",
    ),
    cfg.FloatOpt(
        "soft_affinity_weight_multiplier",
        default=10.0,
        min=0.0,
        help="Weight of hosting members of a soft-affinity server group. Above the "
        "sum of the spreading multipliers (RAM, vCPU, disk: 3.0 by default) so that "
        "the policy packs members wherever there is room (Nova's 1.0 is outweighed "
        "by them in a uniform fleet and packs nothing).",
    ),
    cfg.FloatOpt(
        "soft_anti_affinity_weight_multiplier",
        default=10.0,
        min=0.0,
        help="Weight of hosting no members of a soft-anti-affinity server group "
        "(above the resource multipliers, like soft_affinity_weight_multiplier).",
    ),
    cfg.IntOpt(
        "host_subset_size",
        default=1,
        min=1,
        help="Pick the host at random among this many best ones; above 1 it makes "
        "concurrent schedulers collide less on the same host.",
    ),
]

quota_opts: list[cfg.Opt] = [
    cfg.IntOpt("instances", default=10, min=-1, help="Servers per project (-1: unlimited)."),
    cfg.IntOpt("cores", default=20, min=-1, help="vCPUs per project (-1: unlimited)."),
    cfg.IntOpt("ram", default=51200, min=-1, help="MiB of RAM per project (-1: unlimited)."),
    cfg.IntOpt("metadata_items", default=128, min=-1, help="Metadata items per server."),
    cfg.IntOpt("key_pairs", default=100, min=-1, help="Key pairs per user."),
    cfg.IntOpt("server_groups", default=10, min=-1, help="Server groups per project."),
    cfg.IntOpt("server_group_members", default=10, min=-1, help="Servers per server group."),
    cfg.IntOpt("injected_files", default=5, min=-1, help="Injected files per server."),
    cfg.IntOpt(
        "injected_file_content_bytes", default=10240, min=-1, help="Bytes per injected file."
    ),
    cfg.IntOpt(
        "injected_file_path_length", default=255, min=-1, help="Length of an injected file path."
    ),
    # Networking quotas, with Neutron's defaults and names.
    cfg.IntOpt("network", default=100, min=-1, help="Networks per project."),
    cfg.IntOpt("subnet", default=100, min=-1, help="Subnets per project."),
    cfg.IntOpt("port", default=500, min=-1, help="Ports per project."),
    cfg.IntOpt("security_group", default=10, min=-1, help="Security groups per project."),
    cfg.IntOpt(
        "security_group_rule", default=100, min=-1, help="Security group rules per project."
    ),
    cfg.IntOpt("router", default=10, min=-1, help="Routers per project."),
    cfg.IntOpt("floatingip", default=50, min=-1, help="Floating IPs per project."),
    # Image quotas, Glance's unified limits under their names (-1, as a
    # Glance without keystone limits: unlimited). Sizes in MiB.
    cfg.IntOpt("image_count_total", default=-1, min=-1, help="Images per project."),
    cfg.IntOpt(
        "image_count_uploading",
        default=-1,
        min=-1,
        help="Images of a project being uploaded, staged or imported at once.",
    ),
    cfg.IntOpt("image_size_total", default=-1, min=-1, help="MiB of image data a project stores."),
    cfg.IntOpt(
        "image_stage_total",
        default=-1,
        min=-1,
        help="MiB of image data a project has staged for import (glance-direct).",
    ),
]
