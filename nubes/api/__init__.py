"""The API service: one ASGI application with three services under path prefixes.

``/identity`` (a Keystone v3 subset), ``/compute/v2.1`` (OpenStack Compute
v2.1 with microversions) and ``/image`` (a Glance v2 subset). HTTP handlers
stay thin: they validate, call the functions that turn a request into DB
records and conductor tasks (:mod:`nubes.api.servers`, :mod:`nubes.api.images`,
the resource modules of :mod:`nubes.api.compute_v21`), and render a view.
"""
