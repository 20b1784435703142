"""Choosing hosts: filter, weigh, claim; alternates; NoValidHost with a summary.

Per instance of a request:

1. every enabled filter with a vector form narrows a boolean mask over the
   whole view (a few numpy operations for 10,000 hosts);
2. the weighers score the survivors;
3. the survivors are walked best first (a partial sort: usually only the
   top few are ever looked at), running the filters that have no exact
   vector form on each, until one can be *claimed* in the database; a lost
   race (another scheduler filled the host) re-reads that host and moves on
   to the next, up to ``[scheduler] max_claim_attempts``;
4. the walk goes on for ``max_attempts - 1`` alternates on other hosts,
   returned unclaimed.

Weights are normalised over the hosts that pass the vector filters, which
may include a few that a per-host-only filter removes later; Nova
normalises after all filters. The order among hosts that pass is the same
unless such a filter removes the extremes.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator, Sequence

import numpy as np
from numpy.typing import NDArray

from nubes import exception, group_policy
from nubes.context import RequestContext
from nubes.db.api import group_claims, host_views
from nubes.db.api.compute_nodes import ClaimOutcome
from nubes.db.engine import Connection, Database
from nubes.objects.request_spec import RequestSpec, Selection
from nubes.scheduler import claims
from nubes.scheduler.filters import BaseFilter
from nubes.scheduler.filters.affinity import GROUP_FILTERS
from nubes.scheduler.host_state import BoolArray, HostState, HostStateView
from nubes.scheduler.policies import Policy, PolicySet
from nubes.scheduler.request import SchedulingRequest
from nubes.scheduler.weighers import combined_weights

LOG = logging.getLogger(__name__)

#: Hosts sorted up front; the walk sorts the rest only if it gets that far.
_FIRST_SORTED = 64
#: Nova's ``max_attempts`` default: the chosen host plus two alternates.
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_MAX_CLAIM_ATTEMPTS = 32
#: Name the NoValidHost summary gives the request's own host restrictions.
REQUESTED_HOSTS = "RequestedHosts"


def _fits(hs: HostState, req: SchedulingRequest) -> bool:
    """Whether the host, as the view knows it now, still has room and is usable."""
    return (
        hs.usable
        and hs.free_ram_mb >= req.memory_mb
        and hs.free_vcpus >= req.vcpus
        and hs.free_disk_gb >= req.disk_gb
    )


class HostSelector:
    def __init__(
        self,
        db: Database,
        view: HostStateView,
        policies: PolicySet,
        *,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        max_claim_attempts: int = DEFAULT_MAX_CLAIM_ATTEMPTS,
    ) -> None:
        self.db = db
        self.view = view
        #: The operator's reserved amounts: the view's, which the claims check too.
        self.reserved = view.reserved
        self.policies = policies
        self.max_attempts = max_attempts
        self.max_claim_attempts = max_claim_attempts

    # --- the request -----------------------------------------------------------

    async def select(
        self,
        context: RequestContext,
        spec: RequestSpec,
        instance_uuids: Sequence[str],
        return_alternates: bool = True,
    ) -> list[list[Selection]]:
        """Per instance: the claimed host, then up to max_attempts - 1 alternates.

        All or nothing: if one instance finds no host, the claims made for
        the earlier ones are released and NoValidHost is raised.
        """
        await self.view.ensure_fresh()
        req = SchedulingRequest.from_spec(spec)
        await self._resolve(req, instance_uuids)
        policy = self.policies.choose(req, self.view)
        self._check_group_filters(req, policy)
        results: list[list[Selection]] = []
        try:
            for instance_uuid in instance_uuids:
                chosen = await self._place_one(
                    context, req, policy, instance_uuid, return_alternates
                )
                results.append(chosen)
                req.placed(chosen[0].host)
        except BaseException:
            for done in results:
                await self.release(done[0].instance_uuid)
            raise
        return results

    async def _resolve(self, req: SchedulingRequest, instance_uuids: Sequence[str]) -> None:
        """Fill in what the request needs from the database: the server group's
        policy and where its members are, and the hosts the same_host and
        different_host hints name."""
        same = req.spec.hint_list("same_host")
        different = req.spec.hint_list("different_host")
        if req.group_uuid is None and not same and not different:
            return
        async with self.db.reader() as conn:
            if req.group_uuid is not None:
                await self._resolve_group(conn, req, instance_uuids)
            if same:
                req.same_hosts = await host_views.instance_hosts(conn, same)
            if different:
                req.different_hosts = await host_views.instance_hosts(conn, different)

    @staticmethod
    async def _resolve_group(
        conn: Connection, req: SchedulingRequest, instance_uuids: Sequence[str]
    ) -> None:
        assert req.group_uuid is not None
        found = await group_claims.group_placement(conn, req.group_uuid, exclude=instance_uuids)
        if found is None:
            if req.group_policy is None:
                raise exception.InvalidSchedulerHint(
                    hint="group", reason=f"no server group {req.group_uuid}"
                )
            return  # a group the caller describes itself (nothing to enforce in a claim)
        policy, members = found
        req.group_policy = policy.policy
        req.max_server_per_host = policy.max_server_per_host
        req.group_in_db = True
        hosts = dict(members)
        for host in req.spec.instance_group_hosts:
            hosts[host] = max(hosts.get(host, 0), 1)
        req.group_hosts = hosts

    def _check_group_filters(self, req: SchedulingRequest, policy: Policy) -> None:
        """A hard group policy needs its filter (Nova's "not configured" refusal):
        an accepted group the scheduler would not honour is worse than an error."""
        needed = GROUP_FILTERS.get(req.group_policy or "")
        if needed and all(f.name() != needed for f in policy.filters):
            raise exception.NoValidHost(
                reason=f"the server group's policy {req.group_policy} needs {needed}, "
                f"which scheduling policy {policy.name} does not enable."
            )

    # --- one instance ----------------------------------------------------------

    async def _place_one(
        self,
        context: RequestContext,
        req: SchedulingRequest,
        policy: Policy,
        instance_uuid: str,
        return_alternates: bool,
    ) -> list[Selection]:
        t0 = time.perf_counter()
        idx, lazy = self._vector_filter(req, policy)
        weights = combined_weights(policy.weighers, self.view, idx, req)
        walk = self._walk(req, idx, weights, lazy, policy.host_subset_size)
        t_select = time.perf_counter()
        amounts = claims.Amounts(req.vcpus, req.memory_mb, req.disk_gb)
        # The claim checks a hard group policy itself, atomically (group_claims).
        group_uuid = (
            req.group_uuid
            if req.group_in_db and req.group_policy in group_policy.HARD_POLICIES
            else None
        )
        chosen: Selection | None = None
        tried = lost = group_lost = 0
        for hs in walk:
            if tried >= self.max_claim_attempts:
                break
            if lost and not _fits(hs, req):
                # What a lost race taught the view: not worth a claim.
                continue
            if group_lost and not group_claims.host_allowed(
                req.group_policy, req.max_server_per_host, req.group_hosts, hs.host
            ):
                continue  # another member got there first
            tried += 1
            # Taken in the view before the claim's round trip, so that the
            # selections running meanwhile see it and do not all pick this
            # host; confirmed or given back when the database answers.
            self.view.consume(hs, amounts.vcpus, amounts.memory_mb, amounts.disk_gb, None)
            try:
                outcome = await claims.claim(
                    self.db,
                    hs.node_id,
                    instance_uuid,
                    amounts,
                    group_uuid=group_uuid,
                    reserved=self.reserved,
                )
            except BaseException:
                self.view.give_back(hs, amounts.vcpus, amounts.memory_mb, amounts.disk_gb)
                raise
            result = outcome.result
            if result.outcome is ClaimOutcome.CLAIMED:
                if result.generation is not None:
                    self.view.confirm(hs, result.generation)
                chosen = self._selection(instance_uuid, hs, amounts, policy, result.generation)
                break
            self.view.give_back(hs, amounts.vcpus, amounts.memory_mb, amounts.disk_gb)
            if result.outcome is ClaimOutcome.ALREADY_CLAIMED:
                held = self.view.by_node_id.get(outcome.node_id, hs)
                chosen = self._selection(instance_uuid, held, amounts, policy, result.generation)
                break
            if result.outcome is ClaimOutcome.GROUP_POLICY:
                # Another member of the group was placed meanwhile (in another
                # scheduler, or a request of this one): where the members are now.
                group_lost += 1
                async with self.db.reader() as conn:
                    await self._resolve_group(conn, req, [instance_uuid])
                continue
            # Someone else filled it (or it went away): believe the database,
            # about this host at once and, the first time, about the others.
            lost += 1
            if lost == 1:
                await self.view.catch_up()
            await self.view.refresh_nodes([hs.node_id])
        t_claim = time.perf_counter()
        if chosen is None:
            if group_lost:
                reason = (
                    f"{tried} hosts passed the filters but members of server group "
                    f"{req.group_uuid} took them first ({req.group_policy})."
                )
            elif tried:
                reason = f"{tried} hosts passed the filters but others claimed them first."
            else:
                age = self.view.silenced_by_outage()
                if age is not None:
                    raise exception.ComputeHostsSilent(
                        down_time=f"{self.view.service_down_time:.0f}", age=f"{age:.0f}"
                    )
                reason = self.explain(req, policy)
            LOG.debug(
                "%s: no host for %s (policy %s, %d candidates, %d claims lost): %s",
                context.request_id,
                instance_uuid,
                policy.name,
                len(idx),
                lost,
                reason,
            )
            raise exception.NoValidHost(reason=reason)
        selections = [chosen]
        if return_alternates:
            seen = {chosen.host}
            for hs in walk:
                if len(selections) >= self.max_attempts:
                    break
                if hs.host in seen:
                    continue
                seen.add(hs.host)
                selections.append(self._selection(instance_uuid, hs, amounts, policy, None, False))
        if LOG.isEnabledFor(logging.DEBUG):
            LOG.debug(
                "%s: %s -> %s/%s (policy %s, %d candidates, %d alternates, %d claims lost); "
                "select %.2f ms, claim %.2f ms",
                context.request_id,
                instance_uuid,
                chosen.host,
                chosen.nodename,
                policy.name,
                len(idx),
                len(selections) - 1,
                lost,
                (t_select - t0) * 1000,
                (t_claim - t_select) * 1000,
            )
        return selections

    @staticmethod
    def _selection(
        instance_uuid: str,
        hs: HostState,
        amounts: claims.Amounts,
        policy: Policy,
        generation: int | None,
        claimed: bool = True,
    ) -> Selection:
        return Selection(
            instance_uuid=instance_uuid,
            host=hs.host,
            nodename=hs.nodename,
            compute_node_uuid=hs.uuid,
            claimed=claimed,
            vcpus=amounts.vcpus,
            memory_mb=amounts.memory_mb,
            disk_gb=amounts.disk_gb,
            generation=generation,
            policy=policy.name,
        )

    # --- filtering and ordering ------------------------------------------------

    def _requested_mask(self, req: SchedulingRequest) -> BoolArray | None:
        """The request's own restrictions (forced, requested or ignored hosts)."""
        spec = req.spec
        view = self.view
        wanted = list(spec.force_hosts)
        if spec.requested_destination:
            wanted.append(spec.requested_destination)
        if not wanted and not spec.force_nodes and not spec.ignore_hosts:
            return None
        mask = np.ones(len(view), dtype=bool)
        if wanted:
            mask[:] = False
            mask[view.host_indices(wanted)] = True
        if spec.force_nodes:
            nodes = set(spec.force_nodes)
            mask &= np.fromiter((hs.nodename in nodes for hs in view.hosts), dtype=bool)
        if spec.ignore_hosts:
            mask[view.host_indices(spec.ignore_hosts)] = False
        return mask

    def _vector_filter(
        self, req: SchedulingRequest, policy: Policy
    ) -> tuple[NDArray[np.intp], list[BaseFilter]]:
        """Indices passing every vector form, and the filters left to run per host."""
        mask = self._requested_mask(req)
        lazy: list[BaseFilter] = []
        for f in policy.filters:
            if not f.applies(req):
                continue
            m = f.mask(self.view, req)
            if m is not None:
                # The first mask is the view's own array: copy before and-ing into it.
                mask = m.copy() if mask is None else np.logical_and(mask, m, out=mask)
            if m is None or not f.mask_is_exact:
                lazy.append(f)
        if mask is None:
            return np.arange(len(self.view)), lazy
        return np.flatnonzero(mask), lazy

    def _walk(
        self,
        req: SchedulingRequest,
        idx: NDArray[np.intp],
        weights: NDArray[np.float64],
        lazy: list[BaseFilter],
        subset_size: int,
    ) -> Iterator[HostState]:
        """Hosts passing every filter, best first (the first ``subset_size`` shuffled)."""
        hosts = self.view.hosts

        def ordered() -> Iterator[HostState]:
            n = len(idx)
            if n > _FIRST_SORTED:
                top = np.argpartition(-weights, _FIRST_SORTED)[:_FIRST_SORTED]
                top = top[np.argsort(-weights[top], kind="stable")]
                for i in top:
                    yield hosts[idx[i]]
                rest = np.ones(n, dtype=bool)
                rest[top] = False
                others = np.flatnonzero(rest)
                for i in others[np.argsort(-weights[others], kind="stable")]:
                    yield hosts[idx[i]]
            else:
                for i in np.argsort(-weights, kind="stable"):
                    yield hosts[idx[i]]

        def passing() -> Iterator[HostState]:
            for hs in ordered():
                if all(f.host_passes(hs, req) for f in lazy):
                    yield hs

        it = passing()
        if subset_size > 1:
            head = [hs for _, hs in zip(range(subset_size), it, strict=False)]
            random.shuffle(head)
            yield from head
        yield from it

    def explain(self, req: SchedulingRequest, policy: Policy) -> str:
        """Which filter removed how many hosts, for NoValidHost (the slow path)."""
        view = self.view
        remaining = np.ones(len(view), dtype=bool)
        steps: list[str] = []
        requested = self._requested_mask(req)
        if requested is not None:
            before = int(remaining.sum())
            remaining &= requested
            steps.append(f"{REQUESTED_HOSTS} removed {before - int(remaining.sum())}")
        for f in policy.filters:
            if not f.applies(req):
                continue
            before = int(remaining.sum())
            m = f.mask(view, req)
            if m is not None and f.mask_is_exact:
                remaining &= m
            else:
                for i in np.flatnonzero(remaining):
                    if not f.host_passes(view.hosts[i], req):
                        remaining[i] = False
            after = int(remaining.sum())
            steps.append(f"{f.name()} removed {before - after}")
            if after == 0:
                break
        return f"{len(view)} hosts; " + ", ".join(steps) + f"; {int(remaining.sum())} left."

    # --- reschedule and release ------------------------------------------------

    async def claim_alternate(self, selection: Selection) -> Selection:
        """Claim an alternate for its instance (re-checking capacity); NoValidHost if full."""
        amounts = claims.Amounts(selection.vcpus, selection.memory_mb, selection.disk_gb)
        result, node_id = await claims.claim_alternate(
            self.db,
            selection.compute_node_uuid,
            selection.instance_uuid,
            amounts,
            self.reserved,
            down_time=self.view.service_down_time,
        )
        if not result.ok:
            if node_id >= 0:
                await self.view.refresh_nodes([node_id])
            raise exception.NoValidHost(
                reason=f"the alternate host {selection.host} cannot take it now ({result.outcome})."
            )
        hs = self.view.by_node_id.get(node_id)
        if hs is not None and result.outcome is ClaimOutcome.CLAIMED:
            self.view.consume(
                hs, amounts.vcpus, amounts.memory_mb, amounts.disk_gb, result.generation
            )
        claimed = selection.obj_clone()
        claimed.claimed = True
        claimed.generation = result.generation
        return claimed

    async def release(self, instance_uuid: str) -> int:
        """Release what the instance holds; returns how many nodes it held on."""
        node_ids = await claims.release(self.db, instance_uuid)
        if node_ids:
            # Exact usage from the database rather than guessing ours.
            await self.view.refresh_nodes(node_ids)
        return len(node_ids)
