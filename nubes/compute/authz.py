"""Which services may command a compute host: the conductor, and nobody else.

Every step a host runs belongs to a conductor task (or, for
``live_migration_abort`` / ``live_migration_force_complete``, is a request
the conductor relays from the API), so the conductor is the only sender a
host obeys, whether the message came on ``compute.<host>``, the shared
``compute`` topic or the fanout; the API may only ask a host its uptime,
a guest's console log, its diagnostics and where its console is.
Another compute host in particular is refused: a compromised host must not
be able to stop, reboot or delete the guests of another. The RPC server
checks this table before any method runs; a method missing from it is
refused to everyone (``tests/unit/compute/test_authz.py`` walks it).
"""

from __future__ import annotations

from nubes import access

#: The steps of conductor tasks (and the live-migration requests it relays).
_CONDUCTOR_STEPS = (
    "build_and_run_instance",
    "terminate_instance",
    "stop_instance",
    "start_instance",
    "reboot_instance",
    "rebuild_instance",
    "migrate_disk_and_power_off",
    "finish_migration",
    "confirm_migration",
    "revert_migration_destination",
    "finish_revert_migration",
    "check_can_live_migrate_destination",
    "check_can_live_migrate_source",
    "pre_live_migration",
    "live_migration",
    "post_live_migration_at_destination",
    "post_live_migration",
    "rollback_live_migration_at_destination",
    "rollback_evacuation_at_destination",
    "live_migration_abort",
    "live_migration_force_complete",
    "remove_guest",
    "pause_instance",
    "unpause_instance",
    "suspend_instance",
    "resume_instance",
    "rescue_instance",
    "unrescue_instance",
    "trigger_crash_dump",
    "set_admin_password",
    "soft_delete_instance",
    "restore_instance",
    "shelve_instance",
    "shelve_offload_instance",
    "unshelve_instance",
    "snapshot_instance",
)

METHOD_RULES = access.rules(
    "compute",
    {
        **{(None, name): access.CONDUCTOR for name in _CONDUCTOR_STEPS},
        # A question about the host itself, asked by the API for an admin
        # (``os-hypervisors/{id}/uptime``): it reads, never changes, the host.
        (None, "get_host_uptime"): frozenset({"api"}),
        # A user's ``os-getConsoleOutput``, asked by the API after it found the
        # instance (the user's) placed on this host: a read of one guest's log.
        (None, "get_console_output"): frozenset({"api"}),
        # An admin's ``GET /servers/{id}/diagnostics``, asked the same way:
        # a read of one guest's counters.
        (None, "get_instance_diagnostics"): frozenset({"api"}),
        # A user's console URL: where the proxy reaches the guest's console
        # (the relay address; opening it needs the conductor's consent).
        (None, "get_vnc_console"): frozenset({"api"}),
    },
)
