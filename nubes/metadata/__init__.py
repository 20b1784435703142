"""The metadata service: what a guest is told about itself, and the per-host proxy.

:mod:`.content` renders an :class:`~nubes.objects.instance_metadata.InstanceMetadata`
as the OpenStack and EC2 formats (also the config drive's contents);
:mod:`.proxy` is the HTTP server on each compute host that guests reach at
169.254.169.254.
"""
