"""Test doubles and harnesses that ship with nubes (like httpx's MockTransport).

:mod:`nubes.testing.cloud` runs a conductor and any number of compute-host
identities in one process, on a real database and a real bus, for
functional tests, the security suite and benchmarks.
"""
