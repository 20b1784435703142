"""What the process-level tests and benchmarks share to use a cloud's REST API:
seeding it (users, flavors, an image) and a password token request."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: ``python -c SEED_SCRIPT <api config file> <state dir>``: the API's bootstrap
#: (admin and demo users, the m1.* flavors, an image) and ``clouds.yaml`` in the
#: state dir. It runs under the interpreter of the release that owns the
#: schema (the rolling-upgrade test seeds with release N), so it names only
#: what every release since 06d86b4 has.
SEED_SCRIPT = """
import asyncio, sys
from pathlib import Path
from nubes import config
from nubes.api import allinone, bootstrap
from nubes.db import engine

conf = config.load(["--config-file", sys.argv[1]])

async def main():
    db = engine.configure(conf)
    await bootstrap.first_run(db, conf, Path(sys.argv[2]), allinone.auth_url(conf))
    await db.dispose()

asyncio.run(main())
"""


def password_token_request(auth: Mapping[str, Any]) -> dict[str, Any]:
    """The Keystone v3 body asking a project-scoped token for ``auth`` (a cloud's
    ``auth`` section of ``clouds.yaml``)."""
    return {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {
                        "name": auth["username"],
                        "domain": {"name": "Default"},
                        "password": auth["password"],
                    }
                },
            },
            "scope": {"project": {"name": auth["project_name"], "domain": {"name": "Default"}}},
        }
    }
