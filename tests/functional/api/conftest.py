"""The all-in-one ``cloud`` fixture of test_openstack_cli, for the other CLI test modules."""

from __future__ import annotations

from tests.functional.api.test_openstack_cli import cloud  # noqa: F401  (fixture)
