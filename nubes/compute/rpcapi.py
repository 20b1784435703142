"""Client side of the compute RPC API: what the conductor asks a host to do.

Every method is a cast to one host (``Target("compute", server=host)``) and
carries the identity of the conductor task step it belongs to (a
:class:`~nubes.step_key.StepKey`: task id, step, try): the host reports the outcome back with
``ConductorAPI.step_finished`` and answers a repeated message with the same
outcome instead of doing the work twice.

Version history:

    1.0 - build_and_run_instance, terminate_instance, stop_instance,
          start_instance, reboot_instance
    1.1 - the move steps (docs/moves.md): migrate_disk_and_power_off,
          finish_migration, confirm_migration, revert_migration_destination,
          finish_revert_migration, check_can_live_migrate_destination,
          check_can_live_migrate_source, pre_live_migration, live_migration,
          post_live_migration_at_destination, post_live_migration,
          rollback_live_migration_at_destination, rebuild_instance,
          rollback_evacuation_at_destination;
          live_migration_abort and live_migration_force_complete (not steps)
    1.2 - get_host_uptime (a call: the host's uptime line)
    1.3 - remove_guest (a step: remove the guest of a try the conductor gave up on)
    1.4 - get_console_output (a call: the end of a guest's console log)
    1.5 - every step takes its key as one struct, ``key`` (a StepKey:
          task_id, step, attempt), in place of ``task_id``, ``step`` and
          ``attempt``; hosts still take the spelled-out form, which this
          client sends to a host capped below 1.5
    1.6 - the lifecycle action steps: pause_instance, unpause_instance,
          suspend_instance, resume_instance, rescue_instance,
          unrescue_instance, trigger_crash_dump, set_admin_password,
          soft_delete_instance, restore_instance, shelve_instance,
          shelve_offload_instance, unshelve_instance
    1.7 - get_instance_diagnostics (a call: a running guest's counters);
          get_vnc_console (a call: where the console proxy reaches a guest's
          VNC console, the host's console relay)
    1.8 - snapshot_instance (a step: copy a guest's disk and upload it to one
          image with the conductor's upload grant; createImage, createBackup)
    1.9 - shelve_instance takes ``image_id`` and ``grant``: the guest's disk
          snapshotted to the shelved image (Nova's ``<name>-shelved``) and
          uploaded as snapshot_instance uploads, before the instance is SHELVED
    1.10 - build_and_run_instance and rebuild_instance take ``injected_files``
          (an InjectedFiles: the personality files the host writes on the
          guest's config drive); sent only when there are some, so a build or
          rebuild without files still goes to a host capped below, at the
          method's own version, and one with files to such a host is refused
          (UnsupportedVersion) instead of losing them
    1.11 - build_and_run_instance takes ``placed``: True when the conductor's
          placement commit already moved the instance to task_state spawning
          with ``launched_on`` and started the host's
          ``compute_build_and_run_instance`` event, so the host makes neither
          round trip; a conductor sends it only to hosts it may send 1.11
          (:meth:`ComputeAPI.places_builds`), the others get the message
          without it and do their own saves, as a 1.11 host does when an
          older conductor's message lacks it
    1.12 - pre_live_migration takes ``injected_files`` (an InjectedFiles: the
          personality files the source's check read back from the guest's
          config drive, for the drive the destination writes); sent only
          when there are some, so a live migration without files still goes
          to a destination capped below, at 1.1, and one with files to such
          a host is refused (UnsupportedVersion: the migration rolls back
          with a fault naming the version) instead of losing them
    1.13 - a cold migration's or resize's personality files:
          migrate_disk_and_power_off takes ``carry_files`` (True: the
          conductor gives the destination the files the source reports from
          its guest's config drive) and finish_migration takes
          ``injected_files`` (for the drive the destination writes), as Nova
          copies ``disk.config``. ``carry_files`` is sent only when this
          client may send 1.13 to every host; without it a 1.13 source
          refuses to move a guest that has files before it touches it (the
          move fails with a fault naming the version instead of losing
          them), and one without files moves as before. ``injected_files``
          goes only with files, so a move without any still reaches a
          destination capped below, at 1.1
"""

from __future__ import annotations

from typing import Any

from nubes import exception, versions
from nubes.context import RequestContext
from nubes.injected_files import InjectedFiles
from nubes.objects.flavor import Flavor
from nubes.objects.instance import Instance
from nubes.objects.migration import Migration
from nubes.objects.serializer import ObjectSerializer
from nubes.rpc.client import RPCClient
from nubes.rpc.transport import Target, Transport
from nubes.step_key import StepKey

#: The RPC topic compute hosts listen on (each also on ``compute.<host>``).
TOPIC = "compute"
#: The newest version of the API this client knows.
VERSION = "1.13"
#: Since when a step's key travels as one struct (``key``), not spelled out.
STEP_KEY_VERSION = "1.5"

REBOOT_TYPES = ("SOFT", "HARD")
#: Since when the lifecycle action steps (pause ... set_admin_password) exist.
ACTIONS_VERSION = "1.6"
#: Since when ``shelve_instance`` snapshots the guest's disk (image_id, grant).
SHELVE_SNAPSHOT_VERSION = "1.9"
#: Since when builds and rebuilds carry personality files (``injected_files``).
INJECTED_FILES_VERSION = "1.10"
#: Since when a build may say its placement was written for the host (``placed``).
PLACED_BUILD_VERSION = "1.11"
#: Since when a live migration's destination takes the guest's personality files.
LIVE_INJECTED_FILES_VERSION = "1.12"
#: Since when a cold move carries the guest's personality files (``carry_files``,
#: and the destination's ``injected_files``).
COLD_INJECTED_FILES_VERSION = "1.13"


class ComputeAPI:
    def __init__(self, transport: Transport, version_cap: str | None = None) -> None:
        self.client = RPCClient(
            transport,
            Target(TOPIC),
            version="1.0",
            version_cap=version_cap,
            serializer=ObjectSerializer(),
            # What a host's answer to a question (a call) may raise, re-raised
            # here as itself so the API can answer as Nova does (404, 501).
            expected_errors=(
                exception.InstanceNotFound,
                exception.InstanceInvalidState,
                exception.VirtOperationNotSupported,
            ),
        )

    def _host(self, host: str, version: str = "1.0") -> RPCClient:
        return self.client.prepare(server=host, version=version)

    async def _step(
        self,
        ctxt: RequestContext,
        host: str,
        method: str,
        key: StepKey,
        since: str = "1.0",
        **kwargs: Any,
    ) -> None:
        """Cast the step ``method`` (in the API since version ``since``) to ``host``.

        Like every step it carries its :class:`~nubes.step_key.StepKey`, and
        the host reports its outcome (with ``details`` the next step needs)
        through ``ConductorAPI.step_finished``. The key travels as one struct
        (1.5); to hosts this client is capped below 1.5 for (``[upgrade_levels]
        compute``, an older host still running) it is spelled out as
        ``task_id``, ``step`` and ``attempt``, at the method's own version.
        """
        if versions.parse_version(since) > versions.parse_version(STEP_KEY_VERSION):
            # Newer than the struct key: only ever sent with it (a host
            # capped below ``since`` is refused here, UnsupportedVersion).
            await self._host(host, since).cast(ctxt, method, key=key, **kwargs)
            return
        if self.client.can_send_version(STEP_KEY_VERSION):
            await self._host(host, STEP_KEY_VERSION).cast(ctxt, method, key=key, **kwargs)
            return
        await self._host(host, since).cast(
            ctxt,
            method,
            task_id=key.task_id,
            step=key.step,
            attempt=key.attempt,
            **kwargs,
        )

    async def build_and_run_instance(
        self,
        ctxt: RequestContext,
        host: str,
        instance: Instance,
        node: str,
        key: StepKey,
        image: dict[str, Any],
        request: dict[str, Any],
        injected_files: InjectedFiles | None = None,
        placed: bool = False,
    ) -> None:
        """Spawn the guest; ``injected_files`` go on its config drive (1.10).

        ``placed`` (1.11; only when :meth:`places_builds`): the placement
        commit wrote the instance's task_state spawning, ``launched_on`` and
        the start of the host's event, so the host does not.
        """
        fields = _with_files("1.0", injected_files)
        if placed:
            fields["since"] = PLACED_BUILD_VERSION
            fields["placed"] = True
        await self._step(
            ctxt,
            host,
            "build_and_run_instance",
            key,
            **fields,
            instance=instance,
            node=node,
            image=image,
            request=request,
        )

    def places_builds(self) -> bool:
        """Whether the hosts take a build whose placement the conductor wrote
        for them (1.11); during an upgrade an older one may not, and the
        placement then leaves those saves to the host, as before."""
        return self.client.can_send_version(PLACED_BUILD_VERSION)

    async def terminate_instance(
        self, ctxt: RequestContext, host: str, instance: Instance, key: StepKey
    ) -> None:
        await self._step(ctxt, host, "terminate_instance", key, instance=instance)

    async def stop_instance(
        self, ctxt: RequestContext, host: str, instance: Instance, key: StepKey
    ) -> None:
        await self._step(ctxt, host, "stop_instance", key, instance=instance)

    async def start_instance(
        self, ctxt: RequestContext, host: str, instance: Instance, key: StepKey
    ) -> None:
        await self._step(ctxt, host, "start_instance", key, instance=instance)

    async def reboot_instance(
        self,
        ctxt: RequestContext,
        host: str,
        instance: Instance,
        key: StepKey,
        reboot_type: str,
    ) -> None:
        await self._step(
            ctxt, host, "reboot_instance", key, instance=instance, reboot_type=reboot_type
        )

    # -- lifecycle actions (1.6) --------------------------------------------------

    async def pause_instance(
        self, ctxt: RequestContext, host: str, instance: Instance, key: StepKey
    ) -> None:
        await self._step(ctxt, host, "pause_instance", key, ACTIONS_VERSION, instance=instance)

    async def unpause_instance(
        self, ctxt: RequestContext, host: str, instance: Instance, key: StepKey
    ) -> None:
        await self._step(ctxt, host, "unpause_instance", key, ACTIONS_VERSION, instance=instance)

    async def suspend_instance(
        self, ctxt: RequestContext, host: str, instance: Instance, key: StepKey
    ) -> None:
        await self._step(ctxt, host, "suspend_instance", key, ACTIONS_VERSION, instance=instance)

    async def resume_instance(
        self, ctxt: RequestContext, host: str, instance: Instance, key: StepKey
    ) -> None:
        await self._step(ctxt, host, "resume_instance", key, ACTIONS_VERSION, instance=instance)

    async def rescue_instance(
        self,
        ctxt: RequestContext,
        host: str,
        instance: Instance,
        key: StepKey,
        rescue_image: dict[str, Any],
        admin_password: str | None,
    ) -> None:
        """Boot the guest from ``rescue_image`` (its own disk attached too),
        with ``admin_password`` for the rescue boot when one was set."""
        await self._step(
            ctxt,
            host,
            "rescue_instance",
            key,
            ACTIONS_VERSION,
            instance=instance,
            rescue_image=rescue_image,
            admin_password=admin_password,
        )

    async def unrescue_instance(
        self, ctxt: RequestContext, host: str, instance: Instance, key: StepKey
    ) -> None:
        await self._step(ctxt, host, "unrescue_instance", key, ACTIONS_VERSION, instance=instance)

    async def trigger_crash_dump(
        self, ctxt: RequestContext, host: str, instance: Instance, key: StepKey
    ) -> None:
        await self._step(ctxt, host, "trigger_crash_dump", key, ACTIONS_VERSION, instance=instance)

    async def soft_delete_instance(
        self, ctxt: RequestContext, host: str, instance: Instance, key: StepKey
    ) -> None:
        await self._step(
            ctxt, host, "soft_delete_instance", key, ACTIONS_VERSION, instance=instance
        )

    async def restore_instance(
        self, ctxt: RequestContext, host: str, instance: Instance, key: StepKey
    ) -> None:
        await self._step(ctxt, host, "restore_instance", key, ACTIONS_VERSION, instance=instance)

    def can_snapshot_on_shelve(self) -> bool:
        """Whether hosts take a shelve's snapshot (1.9); below, a shelve only
        powers the guest off, as before."""
        return self.client.can_send_version(SHELVE_SNAPSHOT_VERSION)

    async def shelve_instance(
        self,
        ctxt: RequestContext,
        host: str,
        instance: Instance,
        key: StepKey,
        offload: bool,
        *,
        image_id: str | None = None,
        grant: str | None = None,
    ) -> None:
        """Power the guest off, snapshot its disk to ``image_id`` with
        ``grant`` (1.9; none without an image), instance SHELVED
        (``offload``: the offload follows)."""
        if image_id is None:
            await self._step(
                ctxt,
                host,
                "shelve_instance",
                key,
                ACTIONS_VERSION,
                instance=instance,
                offload=offload,
            )
            return
        await self._step(
            ctxt,
            host,
            "shelve_instance",
            key,
            SHELVE_SNAPSHOT_VERSION,
            instance=instance,
            offload=offload,
            image_id=image_id,
            grant=grant,
        )

    async def shelve_offload_instance(
        self, ctxt: RequestContext, host: str, instance: Instance, key: StepKey
    ) -> None:
        """Remove the shelved guest (the conductor then frees its claim and host)."""
        await self._step(
            ctxt, host, "shelve_offload_instance", key, ACTIONS_VERSION, instance=instance
        )

    async def unshelve_instance(
        self,
        ctxt: RequestContext,
        host: str,
        instance: Instance,
        key: StepKey,
        image: dict[str, Any],
        request: dict[str, Any],
    ) -> None:
        """Power the shelved guest on, or spawn the offloaded one from ``image``."""
        await self._step(
            ctxt,
            host,
            "unshelve_instance",
            key,
            ACTIONS_VERSION,
            instance=instance,
            image=image,
            request=request,
        )

    async def set_admin_password(
        self, ctxt: RequestContext, host: str, instance: Instance, key: StepKey, new_pass: str
    ) -> None:
        await self._step(
            ctxt,
            host,
            "set_admin_password",
            key,
            ACTIONS_VERSION,
            instance=instance,
            new_pass=new_pass,
        )

    async def snapshot_instance(
        self,
        ctxt: RequestContext,
        host: str,
        instance: Instance,
        key: StepKey,
        *,
        image_id: str,
        image_type: str,
        grant: str,
    ) -> None:
        """Copy the guest's disk and upload it to image ``image_id`` with
        ``grant`` (an upload grant for that image and this host) (1.8)."""
        await self._step(
            ctxt,
            host,
            "snapshot_instance",
            key,
            "1.8",
            instance=instance,
            image_id=image_id,
            image_type=image_type,
            grant=grant,
        )

    # -- moves (1.1); see docs/moves.md for who is sent what ------------------------

    async def migrate_disk_and_power_off(
        self,
        ctxt: RequestContext,
        host: str,
        instance: Instance,
        key: StepKey,
        *,
        migration: Migration,
        flavor: Flavor,
        dest_host: str,
    ) -> None:
        """Source of a cold migration or resize; details: ``disk_info``, and the
        guest's personality files with the report (conductor 1.8).

        Told to report them (``carry_files``, 1.13) only when every host takes
        them at ``finish_migration``: a source not told refuses to move a guest
        that has some, before anything is done, rather than lose them.
        """
        carry = self.client.can_send_version(COLD_INJECTED_FILES_VERSION)
        await self._step(
            ctxt,
            host,
            "migrate_disk_and_power_off",
            key,
            COLD_INJECTED_FILES_VERSION if carry else "1.1",
            instance=instance,
            migration=migration,
            flavor=flavor,
            dest_host=dest_host,
            **({"carry_files": True} if carry else {}),
        )

    async def finish_migration(
        self,
        ctxt: RequestContext,
        host: str,
        instance: Instance,
        key: StepKey,
        *,
        migration: Migration,
        disk_info: dict[str, Any],
        image: dict[str, Any],
        resize_instance: bool,
        power_on: bool,
        injected_files: InjectedFiles | None = None,
    ) -> None:
        """Destination of a cold migration or resize: build the guest from the
        disks. ``injected_files`` (the source's report) go on the guest's
        config drive there (1.13)."""
        await self._step(
            ctxt,
            host,
            "finish_migration",
            key,
            instance=instance,
            migration=migration,
            disk_info=disk_info,
            image=image,
            resize_instance=resize_instance,
            power_on=power_on,
            **_with_files("1.1", injected_files, COLD_INJECTED_FILES_VERSION),
        )

    async def confirm_migration(
        self,
        ctxt: RequestContext,
        host: str,
        instance: Instance,
        key: StepKey,
        *,
        migration: Migration,
    ) -> None:
        """Source of a confirmed resize: remove what was kept for a revert."""
        await self._step(
            ctxt, host, "confirm_migration", key, "1.1", instance=instance, migration=migration
        )

    async def revert_migration_destination(
        self,
        ctxt: RequestContext,
        host: str,
        instance: Instance,
        key: StepKey,
        *,
        migration: Migration,
    ) -> None:
        """Destination of a reverted (or rolled back) resize: remove the new guest."""
        await self._step(
            ctxt,
            host,
            "revert_migration_destination",
            key,
            "1.1",
            instance=instance,
            migration=migration,
        )

    async def finish_revert_migration(
        self,
        ctxt: RequestContext,
        host: str,
        instance: Instance,
        key: StepKey,
        *,
        migration: Migration,
        power_on: bool,
    ) -> None:
        """Source of a reverted (or rolled back) resize: bring the original guest back."""
        await self._step(
            ctxt,
            host,
            "finish_revert_migration",
            key,
            "1.1",
            instance=instance,
            migration=migration,
            power_on=power_on,
        )

    async def check_can_live_migrate_destination(
        self,
        ctxt: RequestContext,
        host: str,
        instance: Instance,
        key: StepKey,
        *,
        block_migration: bool,
    ) -> None:
        """Destination check of a live migration; details: ``dest_check_data``."""
        await self._step(
            ctxt,
            host,
            "check_can_live_migrate_destination",
            key,
            "1.1",
            instance=instance,
            block_migration=block_migration,
        )

    async def check_can_live_migrate_source(
        self,
        ctxt: RequestContext,
        host: str,
        instance: Instance,
        key: StepKey,
        *,
        dest_check_data: dict[str, Any],
    ) -> None:
        """Source check of a live migration; details: ``migrate_data``."""
        await self._step(
            ctxt,
            host,
            "check_can_live_migrate_source",
            key,
            "1.1",
            instance=instance,
            dest_check_data=dest_check_data,
        )

    async def pre_live_migration(
        self,
        ctxt: RequestContext,
        host: str,
        instance: Instance,
        key: StepKey,
        *,
        migrate_data: dict[str, Any],
        injected_files: InjectedFiles | None = None,
    ) -> None:
        """Destination, before memory moves; details: ``migrate_data`` (updated).
        ``injected_files`` go on the guest's config drive there (1.12)."""
        await self._step(
            ctxt,
            host,
            "pre_live_migration",
            key,
            instance=instance,
            migrate_data=migrate_data,
            **_with_files("1.1", injected_files, LIVE_INJECTED_FILES_VERSION),
        )

    async def live_migration(
        self,
        ctxt: RequestContext,
        host: str,
        instance: Instance,
        key: StepKey,
        *,
        migration: Migration,
        dest_host: str,
        migrate_data: dict[str, Any],
    ) -> None:
        """Source: move the running guest, saving progress on the instance and migration."""
        await self._step(
            ctxt,
            host,
            "live_migration",
            key,
            "1.1",
            instance=instance,
            migration=migration,
            dest_host=dest_host,
            migrate_data=migrate_data,
        )

    async def post_live_migration_at_destination(
        self,
        ctxt: RequestContext,
        host: str,
        instance: Instance,
        key: StepKey,
        *,
        migrate_data: dict[str, Any],
    ) -> None:
        """Destination, after success: adopt the guest."""
        await self._step(
            ctxt,
            host,
            "post_live_migration_at_destination",
            key,
            "1.1",
            instance=instance,
            migrate_data=migrate_data,
        )

    async def post_live_migration(
        self,
        ctxt: RequestContext,
        host: str,
        instance: Instance,
        key: StepKey,
        *,
        migrate_data: dict[str, Any],
    ) -> None:
        """Source, after success: remove what is left of the guest there."""
        await self._step(
            ctxt,
            host,
            "post_live_migration",
            key,
            "1.1",
            instance=instance,
            migrate_data=migrate_data,
        )

    async def rollback_live_migration_at_destination(
        self,
        ctxt: RequestContext,
        host: str,
        instance: Instance,
        key: StepKey,
        *,
        migrate_data: dict[str, Any],
    ) -> None:
        """Destination, after a failure or an abort: undo pre-live-migration."""
        await self._step(
            ctxt,
            host,
            "rollback_live_migration_at_destination",
            key,
            "1.1",
            instance=instance,
            migrate_data=migrate_data,
        )

    async def rebuild_instance(
        self,
        ctxt: RequestContext,
        host: str,
        instance: Instance,
        key: StepKey,
        *,
        image: dict[str, Any],
        evacuate: bool,
        power_on: bool,
        injected_files: InjectedFiles | None = None,
    ) -> None:
        """Create the guest again from ``image`` on ``host``: a rebuild in place
        (the old guest is removed first) or an evacuation to this host;
        ``injected_files`` (a rebuild's personality) go on its config drive (1.10)."""
        await self._step(
            ctxt,
            host,
            "rebuild_instance",
            key,
            **_with_files("1.1", injected_files),
            instance=instance,
            image=image,
            evacuate=evacuate,
            power_on=power_on,
        )

    async def rollback_evacuation_at_destination(
        self,
        ctxt: RequestContext,
        host: str,
        instance: Instance,
        key: StepKey,
    ) -> None:
        """Destination of a failed evacuation: remove the guest the rebuild may
        have made there (the instance goes back to its source)."""
        await self._step(
            ctxt,
            host,
            "rollback_evacuation_at_destination",
            key,
            "1.1",
            instance=instance,
        )

    async def live_migration_abort(
        self, ctxt: RequestContext, host: str, instance: Instance, migration_id: int
    ) -> None:
        """Ask the source to stop a running live migration (the task then rolls back)."""
        await self._host(host, "1.1").cast(
            ctxt, "live_migration_abort", instance=instance, migration_id=migration_id
        )

    async def live_migration_force_complete(
        self, ctxt: RequestContext, host: str, instance: Instance, migration_id: int
    ) -> None:
        """Ask the source to finish a running live migration now (pausing the guest)."""
        await self._host(host, "1.1").cast(
            ctxt, "live_migration_force_complete", instance=instance, migration_id=migration_id
        )

    async def remove_guest(
        self,
        ctxt: RequestContext,
        host: str,
        instance_uuid: str,
        key: StepKey,
    ) -> None:
        """Remove the guest of ``instance_uuid`` unless the instance is placed on
        ``host`` (1.3): a try the conductor gave up on (``remove_guest`` task)."""
        await self._step(ctxt, host, "remove_guest", key, "1.3", instance_uuid=instance_uuid)

    async def get_host_uptime(self, ctxt: RequestContext, host: str) -> str:
        """What ``uptime`` says on ``host`` (1.2); UnsupportedVersion when capped below."""
        return str(await self._host(host, "1.2").call(ctxt, "get_host_uptime"))

    async def get_console_output(
        self, ctxt: RequestContext, host: str, instance_uuid: str, length: int | None
    ) -> str:
        """The last ``length`` lines (all when None) of the console log of a
        guest on ``host`` (1.4); UnsupportedVersion when capped below."""
        return str(
            await self._host(host, "1.4").call(
                ctxt, "get_console_output", instance_uuid=instance_uuid, length=length
            )
        )

    async def get_instance_diagnostics(
        self, ctxt: RequestContext, host: str, instance_uuid: str
    ) -> dict[str, Any]:
        """The counters of a running guest on ``host`` (1.7), in the 2.48 shape;
        UnsupportedVersion when capped below."""
        answer = await self._host(host, "1.7").call(
            ctxt, "get_instance_diagnostics", instance_uuid=instance_uuid
        )
        return dict(answer)

    async def get_vnc_console(
        self, ctxt: RequestContext, host: str, instance_uuid: str
    ) -> dict[str, Any]:
        """Where the console proxy reaches the VNC console of a guest on
        ``host`` (1.7): ``host``, ``port``, ``internal_access_path``."""
        answer = await self._host(host, "1.7").call(
            ctxt, "get_vnc_console", instance_uuid=instance_uuid
        )
        return dict(answer)


def _with_files(
    since: str, files: InjectedFiles | None, needs: str = INJECTED_FILES_VERSION
) -> dict[str, Any]:
    """``_step``'s ``since`` and the ``injected_files`` argument of a step.

    Personality files need ``needs`` (1.10 for a build or rebuild, 1.12 for
    a live migration's destination, 1.13 for a cold move's); without any the
    step goes at its own version ``since``, as before, so older hosts still
    take it.
    """
    if not files:
        return {"since": since}
    return {"since": needs, "injected_files": files}
