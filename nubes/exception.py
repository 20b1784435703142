"""The one error tree of nubes.

Every error nubes raises on purpose is a :class:`NubesError`. Each class knows
the HTTP status the API answers with (``code``) and whether its message may be
shown to a user (``safe``); an unsafe message is replaced by a generic one at
the API boundary and only logged. Errors travel over RPC by class name and
keyword arguments, so the same class is raised on the caller's side when the
RPC API lists it as expected (see :func:`nubes.rpc.message.error_table`).

::

    NubesError (500)
    ├── ConfigError                       bad option value or file, refused at start
    ├── Invalid (400)
    │   ├── ValidationError               a field of a request or message is wrong
    │   ├── TooLarge                      a value or message over the size the receiver accepts
    │   ├── ObjectFieldError              a value does not fit an object field
    │   │   └── UnknownObjectField        a field name the object does not have
    │   ├── MalformedObject               an object primitive is not a valid envelope
    │   ├── InvalidSchedulerHint          a scheduler hint of the wrong type or value
    │   ├── MarkerNotFound                a pagination marker names no visible row
    │   ├── ComputeServiceUnavailable     a question for a compute host whose service is down
    │   ├── TooManyInstanceTags           more tags than a server may have
    │   ├── QuotaLimitInvalid             a quota limit out of Nova's settable bounds
    │   ├── ImageNotActive                an image that cannot be booted from (yet)
    │   ├── InstanceNotRescuable          a server with nothing to rescue it with
    │   ├── NetworkInvalid                a bad field of a network, subnet, port or rule
    │   ├── NetworkBadRequest             Neutron's BadRequest of a router or floating IP
    │   ├── InvalidKeypair                a key pair's name, type or public key is wrong
    │   ├── NetworkRequestInvalid         a server's networks/ports cannot be used
    │   ├── SchemaValidationError         a request body against its microversion's JSON schema
    │   ├── MalformedBody                 a request body that is not JSON nubes reads
    │   ├── InvalidVersionString          a microversion header that is not MAJOR.MINOR
    │   ├── ConsoleTypeUnavailable        a console protocol or type this cloud does not offer
    │   └── Nova's refusals of a boot, move or rebuild (nubes.api.instance_rules, nubes.api.moves):
    │       FlavorMemoryTooSmall, FlavorDiskSmallerThanImage, FlavorDiskSmallerThanMinDisk,
    │       CannotResizeToSameFlavor, CannotResizeDisk, ResizeFlavorNotFound, OldFlavorNotFound,
    │       MoveHostNotFound, CannotMigrateToSameHost, UnableToMigrateToSelf, EvacuateToSameHost,
    │       ComputeServiceInUse, ForcedWithoutHost, InstanceNotResized, RebuildImageNotFound,
    │       InvalidMigrationState, PreserveEphemeralNotSupported
    ├── RequestTooLarge (413)             a request body over the API's size limit
    ├── ImageTooLarge (413)               image data over [api] image_size_cap
    ├── ImageLimitExceeded (413)          too many tags or members on one image
    ├── ImageQuotaExceeded (413)          a project over an image quota (count, size, staging)
    ├── UnsupportedMediaType (415)        image data of a content type the image API does not take
    ├── VersionNotAcceptable (406)        a microversion outside what the API serves
    ├── NotAuthenticated (401)            no token, or one that is invalid or expired
    ├── Forbidden (403)
    │   ├── IdentityMismatch              a message claims someone its sender is not
    │   ├── PolicyNotAuthorized           the API policy does not let the caller do that
    │   ├── ImageForbidden                an image change its caller may not make
    │   ├── MetadefForbidden              deleting a protected metadata definition namespace
    │   ├── InstanceNotOnHost             the instance is not placed on the calling host
    │   ├── ServiceTooOld                 a compute host's code is older than the cloud serves
    │   └── QuotaExceeded                 a project's quota does not allow the request
    │       └── TooManyInstances, MetadataLimitExceeded, KeypairLimitExceeded,
    │           ServerGroupLimitExceeded, ServerGroupMembersLimitExceeded,
    │           OnsetFileLimitExceeded, OnsetFilePathLimitExceeded, OnsetFileContentLimitExceeded
    ├── NotFound (404)
    │   ├── ServiceNotFound
    │   ├── ComputeHostNotFound           no live compute node with that host/node/uuid
    │   ├── InstanceNotFound
    │   ├── InstanceTagNotFound           the server has not got that tag
    │   ├── MigrationNotFound
    │   ├── FlavorNotFound
    │   ├── AggregateNotFound
    │   ├── InstanceGroupNotFound
    │   ├── InstanceActionNotFound
    │   ├── TaskNotFound                  no conductor task with that id
    │   ├── ImageNotFound
    │   ├── MetadefNamespaceNotFound, MetadefNotFound   metadata definitions (Glance's metadefs)
    │   ├── NetworkNotFound, SubnetNotFound, PortNotFound,
    │   │   SecurityGroupNotFound, SecurityGroupRuleNotFound,
    │   │   RouterNotFound, FloatingIPNotFound
    │   ├── RouterInterfaceNotFound, RouterInterfaceNotFoundForSubnet   no such interface
    │   ├── ExternalGatewayForFloatingIPNotFound   no router joins the port's subnet
    │   │                                 to the floating IP's external network
    │   ├── KeypairNotFound
    │   ├── EvacuateHostNotFound          no compute host of that name to evacuate to
    │   ├── MigrationNotFoundForInstance  the server has no migration with that id
    │   └── ConsoleTokenNotFound          no unexpired, unspent console token of that value
    ├── Gone (410)                        an API Nova answered only with nova-network
    ├── Conflict (409)
    │   ├── InstanceNotReady              no running guest to ask (a console log)
    │   ├── InstanceNotRunning            the guest is not running (trigger_crash_dump)
    │   ├── UnshelveInstanceInvalidState  a zone or host to unshelve a server not offloaded
    │   ├── ShelvedImageNotFound          the snapshot an offloaded server was shelved to is gone
    │   ├── PinnedZoneChange              a pinned server pinned elsewhere without unpinning (2.104)
    │   ├── PinnedZoneMismatch            a server pinned to a zone it is not in (2.104)
    │   ├── ObjectActionError             an object method cannot run in this state
    │   ├── InstanceUpdateConflict        expected vm_state/task_state no longer hold
    │   ├── ComputeNodeGenerationConflict a compute node changed since it was read
    │   ├── TaskLeaseLost                 a conductor no longer owns the task it works on
    │   ├── TaskChanged                   a task moved on since it was read (read it again)
    │   ├── ClaimNotMade                  a scheduler claim's write matched no node (and why)
    │   ├── InvalidInstanceTransition     the state table forbids that vm_state/task_state change
    │   │   └── InstanceInvalidState      an API action the instance's state does not allow
    │   ├── InstanceIsLocked              a locked instance, changed by a non-admin
    │   ├── InvalidMigrationTransition    the migration status table forbids that change
    │   ├── DBDuplicateEntry              a unique constraint refused a row
    │   ├── NetworkInUse, SubnetInUse, SecurityGroupInUse   still referenced by ports
    │   ├── IpAddressGenerationFailure    no free address left on the network's subnets
    │   ├── IpAddressAlreadyAllocated     a fixed IP asked for is held by another port
    │   ├── SecurityGroupRuleExists       the same rule is in the group already
    │   ├── PortInUse                     the port is bound to another server
    │   ├── NetworkOverQuota              Neutron's OverQuota (409, not 403)
    │   ├── MetadefDuplicate              a metadata definition of a name that exists
    │   ├── RouterInUse                   a router that still has interfaces
    │   ├── ServicePortInUse              a router's or floating IP's port, deleted as a port
    │   ├── RouterInterfaceInUseByFloatingIP, RouterExternalGatewayInUseByFloatingIp
    │   │                                 a floating IP is mapped through it
    │   ├── FloatingIPPortAlreadyAssociated   the fixed IP has a floating IP already
    │   └── KeyPairExists                 the user has a key pair of that name
    ├── ObjectError (500)
    │   ├── UnknownObject                 no such object name in the registry
    │   ├── IncompatibleObjectVersion     a newer major, or a minor we cannot read
    │   └── ObjectLoadError               a lazy-loaded field could not be loaded
    ├── HostCannotAnswer (501)            a compute host runs code too old for the question
    ├── DriverCannotDo (400)              a host operation no nubes driver implements
    ├── ComputeHostsSilent (503)          every compute host silent, but one reported lately:
    │                                     the control plane is coming back; placed again soon
    ├── NoValidHost (500)                 no host passed the filters or could be claimed;
    │                                     its text (which filter removed how many) is safe
    ├── DatabaseAccessForbidden (500)     compute touched the DB layer
    ├── VirtDriverError (500)             a hypervisor operation failed on a compute host
    │   ├── VirtOperationNotSupported     the host's virt driver cannot do that (yet)
    │   ├── ImageFetchFailed              a host could not get an image's bytes into its cache
    │   ├── ImageUploadFailed             a host could not upload a snapshot to its image
    │   ├── NetworkPlumbingError          a host network agent's command (ip, nft, dnsmasq) failed
    │   └── LiveMigrationAborted          a live migration stopped by an abort (the guest stays)
    ├── DBError (500)                     the database failed in a way the caller may handle
    │   ├── DBConnectionError (503)       the database is unreachable
    │   ├── DBDeadlock                    deadlock or lock timeout; the transaction may be retried
    │   └── DBReferenceError              a row refers to one that does not exist
    └── RPCError (500)
        ├── TransportError (503)          the bus is unreachable; names the hop
        ├── MessagingTimeout (504)        no reply within the call's timeout
        ├── UnsupportedVersion            the server cannot handle that version
        ├── MalformedMessage (400)        undecodable body or missing envelope
        ├── NoSuchMethod (400)            unknown method or namespace
        ├── InvalidArguments (400)        missing, extra or mistyped arguments
        └── RemoteError                   an unexpected error on the remote side
"""

from __future__ import annotations

from typing import Any, ClassVar

#: Every NubesError subclass by class name (filled as classes are defined).
ERRORS_BY_NAME: dict[str, type[NubesError]] = {}

#: Shown instead of a message that is not safe for users.
GENERIC_MESSAGE = "An unexpected error occurred; the request id identifies it in the logs."


class NubesError(Exception):
    """Base of every deliberate nubes error.

    Subclasses set ``msg_fmt`` (formatted with the keyword arguments), ``code``
    and ``safe``. The keyword arguments are kept in ``kwargs`` so the error can
    be rebuilt on the other side of an RPC call.
    """

    msg_fmt: ClassVar[str] = "An unknown error occurred."
    code: ClassVar[int] = 500
    safe: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # By name, so an error that crossed RPC can be rebuilt as its class.
        ERRORS_BY_NAME[cls.__name__] = cls

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        self.kwargs = kwargs
        if message is None:
            try:
                message = self.msg_fmt % kwargs if kwargs else self.msg_fmt
            except (KeyError, TypeError, ValueError):
                # A format mismatch must not hide the original failure.
                message = f"{self.msg_fmt} ({kwargs!r})"
        self.message = message
        super().__init__(message)

    def user_message(self) -> str:
        """The text an API response may carry."""
        return self.message if self.safe else GENERIC_MESSAGE


class ConfigError(NubesError):
    msg_fmt = "Invalid configuration: %(reason)s"


class Invalid(NubesError):
    msg_fmt = "Invalid input: %(reason)s"
    code = 400
    safe = True


class ConsoleTypeUnavailable(Invalid):
    """Nova's answer for a console the cloud has switched off or lacks."""

    msg_fmt = "Unavailable console type %(console_type)s."


class InstanceNotRescuable(Invalid):
    msg_fmt = "Instance %(instance_id)s cannot be rescued: %(reason)s"


class ValidationError(Invalid):
    msg_fmt = "Invalid value for %(field)s: %(reason)s"


class TooLarge(Invalid):
    """A value, or a whole message, over the size the receiver accepts."""

    msg_fmt = "%(what)s is %(size)d bytes; at most %(limit)d are accepted"


class ObjectFieldError(Invalid):
    msg_fmt = "%(objname)s.%(field)s cannot be set to %(value)s: %(reason)s"


class UnknownObjectField(ObjectFieldError):
    msg_fmt = "%(objname)s %(objver)s has no field %(field)s"


class MalformedObject(Invalid):
    msg_fmt = "Malformed object primitive: %(reason)s"


class InvalidSchedulerHint(Invalid):
    msg_fmt = "Scheduler hint %(hint)s is invalid: %(reason)s"


class MarkerNotFound(Invalid):
    msg_fmt = "Marker %(marker)s could not be found."


class ImageNotActive(Invalid):
    msg_fmt = "Image %(image_id)s is not active."


class SchemaValidationError(Invalid):
    """A request body does not match the JSON schema of its microversion."""

    msg_fmt = "Invalid input for field/attribute %(field)s. Value: %(value)s. %(reason)s"


class MalformedBody(Invalid):
    """A request body that is not JSON, or JSON nubes refuses to read."""

    msg_fmt = "Malformed request body: %(reason)s"


class InvalidVersionString(Invalid):
    """A microversion header that is not MAJOR.MINOR."""

    msg_fmt = (
        "API Version String %(version)s is of invalid format. Must be of format MajorNum.MinorNum."
    )


# Nova's refusals of a boot, a move or a rebuild (400), raised by nubes.api's rules.


class CannotResizeToSameFlavor(Invalid):
    msg_fmt = "When resizing, instances must change flavor!"


class PreserveEphemeralNotSupported(Invalid):
    msg_fmt = "The current driver does not support preserving ephemeral partitions."


class CannotResizeDisk(Invalid):
    msg_fmt = "Server disk was unable to be resized because: %(reason)s"


class ResizeFlavorNotFound(Invalid):
    """Nova's resize answers an unknown or disabled flavor with 400, not 404."""

    msg_fmt = "Flavor %(flavor_id)s could not be found."


class FlavorMemoryTooSmall(Invalid):
    msg_fmt = "Flavor's memory is too small for requested image."


class FlavorDiskSmallerThanImage(Invalid):
    msg_fmt = (
        "Flavor's disk is too small for requested image. Flavor disk is "
        "%(flavor_size)i bytes, image is %(image_size)i bytes."
    )


class FlavorDiskSmallerThanMinDisk(Invalid):
    msg_fmt = (
        "Flavor's disk is smaller than the minimum size specified in image metadata. "
        "Flavor disk is %(flavor_size)i bytes, minimum size is %(image_min_disk)i bytes."
    )


class MoveHostNotFound(Invalid):
    """A migration to a host that has no compute node (400 in Nova's migrate APIs)."""

    msg_fmt = "Compute host %(host)s could not be found."


class CannotMigrateToSameHost(Invalid):
    msg_fmt = "Cannot migrate to the host where the server exists."


class UnableToMigrateToSelf(Invalid):
    msg_fmt = "Unable to migrate instance (%(instance_id)s) to current host (%(host)s)."


class EvacuateToSameHost(Invalid):
    msg_fmt = "The target host can't be the same one."


class ComputeServiceInUse(Invalid):
    msg_fmt = "Compute service of %(host)s is still in use."


class ForcedWithoutHost(Invalid):
    msg_fmt = "Can't force to a non-provided destination"


class InstanceNotResized(Invalid):
    msg_fmt = "Instance has not been resized."


class OldFlavorNotFound(Invalid):
    msg_fmt = "Flavor used by the instance could not be found."


class RebuildImageNotFound(Invalid):
    msg_fmt = "Cannot find image for rebuild"


class InvalidMigrationState(Invalid):
    msg_fmt = (
        "Migration %(migration_id)s state of instance %(instance_uuid)s is %(state)s. "
        "Cannot %(method)s while the migration is in this state."
    )


class RequestTooLarge(NubesError):
    msg_fmt = "Request is too large."
    code = 413
    safe = True


class NetworkInvalid(Invalid):
    """Neutron's InvalidInput: ``reason`` is the whole message."""

    msg_fmt = "%(reason)s"


class NetworkBadRequest(Invalid):
    """Neutron's ``BadRequest``: a router or floating IP request that cannot be done."""

    msg_fmt = "Bad %(resource)s request: %(msg)s."


class InvalidKeypair(Invalid):
    msg_fmt = "Keypair data is invalid: %(reason)s"


class NetworkRequestInvalid(Invalid):
    """A server's requested networks or ports that cannot be used (Nova's 400 texts)."""

    msg_fmt = "%(reason)s"


class ImageTooLarge(NubesError):
    """Image data over ``[api] image_size_cap`` (413)."""

    msg_fmt = "Image exceeds the storage quota: %(cap)s bytes at most."
    code = 413
    safe = True


class ImageLimitExceeded(NubesError):
    """Glance's 413 for an image's tags or members over their limit."""

    msg_fmt = "%(reason)s"
    code = 413
    safe = True


class ImageQuotaExceeded(NubesError):
    """A project over one of its image quotas (Glance's unified limits): 413,
    with the text of Glance's LimitExceeded around oslo.limit's."""

    msg_fmt = (
        "The request returned a 413 Request Entity Too Large. This generally means that "
        "rate limiting or a quota threshold was breached.\n\nThe response body:\n"
        "Project %(project_id)s is over a limit for [%(overs)s]"
    )
    code = 413
    safe = True


class UnsupportedMediaType(NubesError):
    """Image data sent with a content type the image API does not take (415)."""

    msg_fmt = "Content type %(content_type)s is not supported; use application/octet-stream."
    code = 415
    safe = True


class VersionNotAcceptable(NubesError):
    """A microversion outside what the API serves (406)."""

    msg_fmt = (
        "Version %(version)s is not supported by the API. "
        "Minimum is %(min)s and maximum is %(max)s."
    )
    code = 406
    safe = True


class ComputeServiceUnavailable(Invalid):
    msg_fmt = "Compute service of %(host)s is unavailable at this time."


class TooManyInstanceTags(Invalid):
    msg_fmt = "The number of tags exceeded the per-server limit %(limit)d"


class NotAuthenticated(NubesError):
    msg_fmt = "The request you have made requires authentication."
    code = 401
    safe = True


class Forbidden(NubesError):
    msg_fmt = "Forbidden: %(reason)s"
    code = 403
    safe = True


class PolicyNotAuthorized(Forbidden):
    """The API policy does not let the caller do that."""

    msg_fmt = "Policy doesn't allow %(action)s to be performed."


class ImageForbidden(Forbidden):
    """An image change its caller may not make (Glance's 403 texts)."""

    msg_fmt = "%(reason)s"


class MetadefForbidden(Forbidden):
    """A metadata definition change refused: a protected namespace or
    resource type (Glance's texts)."""

    msg_fmt = "%(reason)s"


class IdentityMismatch(Forbidden):
    msg_fmt = "Message claims caller %(claimed)s but was sent by %(actual)s"


class ServiceTooOld(Forbidden):
    """A compute host registers (or reports) with a service version below
    :data:`nubes.versions.MINIMUM_SERVICE_VERSION`: the conductors no longer
    speak what it speaks, so it is refused rather than half served."""

    msg_fmt = (
        "%(binary)s on %(host)s runs service version %(version)s, older than the "
        "oldest this cloud serves (%(minimum)s, release %(release)s): upgrade it"
    )


class InstanceNotOnHost(Forbidden):
    """The instance is not placed on the host, in the database.

    Placed means: its ``host`` is that host, or its ``node`` is one of the
    host's compute nodes, or a migration of it in progress has the host as
    its source or destination.
    """

    msg_fmt = "Instance %(instance_uuid)s is not placed on host %(host)s."


class QuotaExceeded(Forbidden):
    msg_fmt = "Quota exceeded: %(reason)s"


class TooManyInstances(QuotaExceeded):
    msg_fmt = (
        "Quota exceeded for %(overs)s: Requested %(req)s, but already used %(used)s "
        "of %(allowed)s %(overs)s"
    )


class MetadataLimitExceeded(QuotaExceeded):
    msg_fmt = "Maximum number of metadata items exceeds %(allowed)d"


class KeypairLimitExceeded(QuotaExceeded):
    msg_fmt = "Maximum number of key pairs exceeded"


class ServerGroupLimitExceeded(QuotaExceeded):
    msg_fmt = "Quota exceeded, too many server groups."


class ServerGroupMembersLimitExceeded(QuotaExceeded):
    msg_fmt = "Quota exceeded, too many servers in group"


class OnsetFileLimitExceeded(QuotaExceeded):
    msg_fmt = "Personality file limit exceeded"


class OnsetFilePathLimitExceeded(QuotaExceeded):
    msg_fmt = "Personality file path exceeds maximum %(allowed)s"


class OnsetFileContentLimitExceeded(QuotaExceeded):
    msg_fmt = "Personality file content exceeds maximum %(allowed)s"


class QuotaLimitInvalid(Invalid):
    """A new limit below what is in use, or above what the project allows (400)."""


class NotFound(NubesError):
    msg_fmt = "Resource could not be found: %(reason)s"
    code = 404
    safe = True


class ConsoleTokenNotFound(NotFound):
    """Never says whether the token existed, expired or was spent."""

    msg_fmt = "Token not found"


class ServiceNotFound(NotFound):
    msg_fmt = "Service %(service)s could not be found."


class ComputeHostNotFound(NotFound):
    msg_fmt = "Compute node %(node)s could not be found."


class InstanceNotFound(NotFound):
    msg_fmt = "Instance %(instance_id)s could not be found."


class InstanceTagNotFound(NotFound):
    msg_fmt = "Instance %(instance_id)s has no tag '%(tag)s'."


class MigrationNotFound(NotFound):
    msg_fmt = "Migration %(migration_id)s could not be found."


class FlavorNotFound(NotFound):
    msg_fmt = "Flavor %(flavor_id)s could not be found."


class AggregateNotFound(NotFound):
    msg_fmt = "Aggregate %(aggregate_id)s could not be found."


class InstanceGroupNotFound(NotFound):
    msg_fmt = "Server group %(group_uuid)s could not be found."


class InstanceActionNotFound(NotFound):
    msg_fmt = "Action for request %(request_id)s on instance %(instance_uuid)s not found."


class TaskNotFound(NotFound):
    msg_fmt = "Task %(task_id)s could not be found."


class ImageNotFound(NotFound):
    msg_fmt = "Image %(image_id)s could not be found."


class MetadefNamespaceNotFound(NotFound):
    msg_fmt = "Metadata definition namespace=%(namespace)s was not found."


class MetadefNotFound(NotFound):
    """An object, property, tag, resource type or association of the
    metadata definitions catalog (Glance's texts, which differ by kind)."""

    msg_fmt = "%(reason)s"


class NetworkNotFound(NotFound):
    msg_fmt = "Network %(net_id)s could not be found."


class SubnetNotFound(NotFound):
    msg_fmt = "Subnet %(subnet_id)s could not be found."


class PortNotFound(NotFound):
    msg_fmt = "Port %(port_id)s could not be found."


class SecurityGroupNotFound(NotFound):
    msg_fmt = "Security group %(id)s does not exist"


class SecurityGroupRuleNotFound(NotFound):
    msg_fmt = "Security group rule %(id)s does not exist"


class RouterNotFound(NotFound):
    msg_fmt = "Router %(router_id)s could not be found"


class FloatingIPNotFound(NotFound):
    msg_fmt = "Floating IP %(floatingip_id)s could not be found"


class RouterInterfaceNotFound(NotFound):
    msg_fmt = "Router %(router_id)s does not have an interface with id %(port_id)s"


class RouterInterfaceNotFoundForSubnet(NotFound):
    msg_fmt = "Router %(router_id)s has no interface on subnet %(subnet_id)s"


class ExternalGatewayForFloatingIPNotFound(NotFound):
    msg_fmt = (
        "External network %(external_network_id)s is not reachable from subnet "
        "%(subnet_id)s.  Therefore, cannot associate Port %(port_id)s with a Floating IP."
    )


class KeypairNotFound(NotFound):
    msg_fmt = "Keypair %(name)s not found for user %(user_id)s"


class EvacuateHostNotFound(NotFound):
    msg_fmt = "Compute host %(host)s not found."


class MigrationNotFoundForInstance(NotFound):
    msg_fmt = "Migration %(migration_id)s not found for instance %(instance_id)s"


class Gone(NubesError):
    """An API Nova removed with nova-network (its network-proxy APIs' writes)."""

    msg_fmt = "This API was removed with nova-network: %(reason)s"
    code = 410
    safe = True


class Conflict(NubesError):
    msg_fmt = "Conflict: %(reason)s"
    code = 409
    safe = True


class InstanceNotReady(Conflict):
    """The instance has no running guest to ask (Nova's 409 for a console
    log of a server not yet placed, or not running)."""

    msg_fmt = "Instance %(instance_id)s is not ready: %(reason)s"


class InstanceNotRunning(Conflict):
    """Nova's 409 for an action that needs the guest running (trigger_crash_dump)."""

    msg_fmt = "Instance %(instance_id)s is not running."


class PinnedZoneChange(Conflict):
    """2.104: a server pinned to one zone is unpinned before it is pinned to another."""

    msg_fmt = (
        "Cannot change pinned availability zone directly. Unpin first by "
        "setting pinned_availability_zone to null."
    )


class PinnedZoneMismatch(Conflict):
    """2.104: a server is pinned only to the zone it is in."""

    msg_fmt = (
        "Server can only be pinned to its current availability zone "
        "'%(current_az)s', but '%(requested_az)s' was requested."
    )


class UnshelveInstanceInvalidState(Conflict):
    msg_fmt = (
        'Specifying an availability zone or a host when unshelving server "%(instance_uuid)s" '
        'with status "%(state)s" is not supported. The server status must be '
        "SHELVED_OFFLOADED."
    )


class ShelvedImageNotFound(Conflict):
    """The snapshot an offloaded server was shelved to is gone: spawning it
    from its original image instead would silently lose its disk (Nova puts
    the server in ERROR; refused here before anything changes)."""

    msg_fmt = "Unshelve attempted but the image %(image_id)s cannot be found."


class ObjectActionError(Conflict):
    msg_fmt = "Object action %(action)s failed: %(reason)s"


class InstanceUpdateConflict(Conflict):
    """A compare-and-set update lost: another writer changed the instance first.

    ``expected`` and ``actual`` map the checked fields (vm_state, task_state)
    to what the caller expected and what the row held.
    """

    msg_fmt = (
        "Conflict updating instance %(instance_uuid)s: expected %(expected)s, found %(actual)s"
    )


class ComputeNodeGenerationConflict(Conflict):
    msg_fmt = (
        "Compute node %(node)s changed meanwhile: generation %(actual)s, expected %(expected)s"
    )


class TaskLeaseLost(Conflict):
    msg_fmt = "Task %(task_id)s is no longer leased to %(owner)s"


class ClaimNotMade(Conflict):
    """A scheduler claim's conditional write matched no node row.

    ``outcome`` (a ``ClaimOutcome`` value), ``node`` (the node the consumer
    holds on, or the one asked) and ``generation`` say why, as read in the
    claim's own transaction.
    """

    msg_fmt = "No claim made on node %(node)s: %(outcome)s"


class TaskChanged(Conflict):
    """A write conditioned on a task row as read found the row changed since."""

    msg_fmt = "Task %(task_id)s changed since it was read"


class InvalidInstanceTransition(Conflict):
    """The state table of :mod:`nubes.objects.states` forbids the change.

    ``current`` and ``target`` are ``vm_state/task_state`` pairs as text.
    """

    msg_fmt = "Instance %(instance_uuid)s cannot go from %(current)s to %(target)s"


class InstanceInvalidState(InvalidInstanceTransition):
    """An API action asked of an instance in a state the action does not start from."""

    msg_fmt = "Cannot '%(action)s' instance %(instance_uuid)s while it is in %(attr)s %(state)s"


class InstanceIsLocked(Conflict):
    """Nova's check_instance_lock: a locked instance is changed by admins only."""

    msg_fmt = "Instance %(instance_uuid)s is locked"


class InvalidMigrationTransition(Conflict):
    """The migration status table of :mod:`nubes.objects.states` forbids the change."""

    msg_fmt = (
        "Migration %(migration_id)s (%(migration_type)s) cannot go from %(current)s to %(target)s"
    )


class DBDuplicateEntry(Conflict):
    """A unique constraint refused an insert or update; ``table``/``columns`` name it."""

    msg_fmt = "%(table)s: an entry with the same %(columns)s already exists."


class NetworkInUse(Conflict):
    msg_fmt = "Unable to complete operation on network %(net_id)s. There are one or more ports still in use on the network."  # noqa: E501


class SubnetInUse(Conflict):
    msg_fmt = "Unable to complete operation on subnet %(subnet_id)s: One or more ports have an IP allocation from this subnet."  # noqa: E501


class SecurityGroupInUse(Conflict):
    msg_fmt = "Security Group %(id)s in use."


class IpAddressGenerationFailure(Conflict):
    msg_fmt = "No more IP addresses available on network %(net_id)s."


class IpAddressAlreadyAllocated(Conflict):
    msg_fmt = "IP address %(ip)s already allocated in subnet %(subnet_id)s"


class SecurityGroupRuleExists(Conflict):
    msg_fmt = "Security group rule already exists. Rule id is %(rule_id)s."


class PortInUse(Conflict):
    msg_fmt = "Port %(port_id)s is still in use by %(device_id)s."


class MetadefDuplicate(Conflict):
    """A metadata definition named like one that exists (Glance's texts)."""

    msg_fmt = "%(reason)s"


class NetworkOverQuota(Conflict):
    """Neutron answers an exceeded quota with 409 ``OverQuota``."""

    msg_fmt = "Quota exceeded for resources: ['%(resource)s']."


class ServicePortInUse(Conflict):
    msg_fmt = "Port %(port_id)s cannot be deleted directly via the port API: %(reason)s"


class RouterInUse(Conflict):
    msg_fmt = "Router %(router_id)s %(reason)s"


class RouterInterfaceInUseByFloatingIP(Conflict):
    msg_fmt = (
        "Router interface for subnet %(subnet_id)s on router %(router_id)s cannot be "
        "deleted, as it is required by one or more floating IPs."
    )


class RouterExternalGatewayInUseByFloatingIp(Conflict):
    msg_fmt = (
        "Gateway cannot be updated for router %(router_id)s, since a gateway to external "
        "network %(net_id)s is required by one or more floating IPs."
    )


class FloatingIPPortAlreadyAssociated(Conflict):
    msg_fmt = (
        "Cannot associate floating IP %(floating_ip_address)s (%(fip_id)s) with port "
        "%(port_id)s using fixed IP %(fixed_ip)s, as that fixed IP already has a floating IP "
        "on external network %(net_id)s."
    )


class KeyPairExists(Conflict):
    msg_fmt = "Key pair '%(key_name)s' already exists."


class ObjectError(NubesError):
    msg_fmt = "Object error: %(reason)s"


class UnknownObject(ObjectError):
    msg_fmt = "Unknown object %(objname)s"


class IncompatibleObjectVersion(ObjectError):
    msg_fmt = "Version %(objver)s of %(objname)s is not supported; highest known is %(supported)s"


class ObjectLoadError(ObjectError):
    msg_fmt = "Cannot load %(field)s of %(objname)s: %(reason)s"


class HostCannotAnswer(NubesError):
    msg_fmt = "Compute host %(host)s cannot answer %(question)s: %(reason)s"
    code = 501
    safe = True


class DriverCannotDo(NubesError):
    """A host operation no nubes driver implements (host maintenance mode,
    host power actions). Nova answers 501; a request the cloud cannot carry
    out is the caller's to change, so it is a 400 here (no 5xx for a
    well-formed request that simply asks for what is not offered)."""

    msg_fmt = "%(reason)s"
    code = 400
    safe = True


class ComputeHostsSilent(NubesError):
    """No compute host is up, but the newest heartbeat is recent: heartbeats
    travel through the bus and a conductor, so an outage of either longer than
    ``service_down_time`` silences every host at once, and right after it every
    host looks down until its next beat. Transient: placement is tried again
    (``nubes.scheduler.rpcapi``), instead of failing builds that arrive then."""

    msg_fmt = (
        "No compute host has reported within %(down_time)s s; the newest report is "
        "%(age)s s old, so the control plane is likely coming back from an outage"
    )
    code = 503


class NoValidHost(NubesError):
    """The scheduler found no host for an instance.

    ``reason`` says which filter removed how many hosts (or that every
    candidate was claimed by others first); it names filters and counts,
    never hosts. A build's instance fault shows its owner only
    :attr:`FAULT_MESSAGE`, as Nova does; the reason goes in the fault's
    details, which only admins see (how big the cloud is and which limits
    bind are the operator's business).
    """

    msg_fmt = "No valid host was found. %(reason)s"
    safe = True
    FAULT_MESSAGE = "No valid host was found. There are not enough hosts available."


class DatabaseAccessForbidden(NubesError):
    msg_fmt = (
        "This service (%(service)s) has no database access; "
        "database work must go through the conductor over RPC."
    )


class VirtDriverError(NubesError):
    msg_fmt = "Virt driver %(operation)s failed for instance %(instance_uuid)s: %(reason)s"


class NetworkPlumbingError(VirtDriverError):
    """The host's network agent could not set up its bridges, tunnels, rules or DHCP."""

    msg_fmt = "Network data plane command %(command)s failed: %(reason)s"


class VirtOperationNotSupported(VirtDriverError):
    """Refused before anything changed: the guest is as it was."""

    msg_fmt = "Virt driver %(driver)s cannot %(operation)s instance %(instance_uuid)s: %(reason)s"


class ImageFetchFailed(VirtDriverError):
    msg_fmt = "Image %(image_id)s could not be fetched to host %(host)s: %(reason)s"


class ImageUploadFailed(VirtDriverError):
    msg_fmt = "Image %(image_id)s could not be uploaded from host %(host)s: %(reason)s"


class LiveMigrationAborted(VirtDriverError):
    """A driver's ``live_migration`` stopped because its ``live_migration_abort``
    asked it to (``nubes.compute.virt.driver.ComputeDriver``); the guest still
    runs on the source."""

    msg_fmt = "Live migration of instance %(instance_uuid)s was aborted on %(host)s"


class DBError(NubesError):
    msg_fmt = "Database error: %(reason)s"


class DBConnectionError(DBError):
    msg_fmt = "Cannot reach the database: %(reason)s"
    code = 503


class DBDeadlock(DBError):
    msg_fmt = "Database deadlock or lock timeout; the transaction may be retried: %(reason)s"


class DBReferenceError(DBError):
    msg_fmt = "A row refers to a missing %(table)s: %(reason)s"


class RPCError(NubesError):
    msg_fmt = "RPC error: %(reason)s"


class TransportError(RPCError):
    msg_fmt = "Message bus failure at %(hop)s: %(reason)s"
    code = 503


class MessagingTimeout(RPCError):
    msg_fmt = "No reply to %(method)s on %(target)s within %(timeout)s s"
    code = 504


class UnsupportedVersion(RPCError):
    msg_fmt = (
        "Endpoint %(topic)s does not support RPC version %(version)s "
        "(it implements %(implemented)s)"
    )


class MalformedMessage(RPCError):
    msg_fmt = "Malformed message: %(reason)s"
    code = 400


class NoSuchMethod(RPCError):
    msg_fmt = "Endpoint has no method %(method)s in namespace %(namespace)s"
    code = 400


class InvalidArguments(RPCError):
    msg_fmt = "Bad arguments for %(method)s: %(reason)s"
    code = 400


class RemoteError(RPCError):
    """An error the remote side did not expect, carried by name and message."""

    msg_fmt = "Remote error: %(exc_type)s %(value)s"


#: Errors that mean the database or the bus is away for now, not that the
#: request is wrong: what failed this way may be tried again later, and
#: whoever sent it is owed that retry (a host's report is redelivered, a
#: loop backs off, the API answers 503 with Retry-After). The one list of
#: them, used by every loop and server that rides out an outage.
TRANSIENT_ERRORS: tuple[type[NubesError], ...] = (
    DBConnectionError,
    DBDeadlock,
    TransportError,
    MessagingTimeout,
    ComputeHostsSilent,
)
