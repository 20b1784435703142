"""nubes: a compute-cloud control plane in the no-db-compute design."""

__version__ = "0.1.0"
