"""Where the real servers the integration tests and benchmarks need live.

The URLs (overridable by environment), the command that installs and starts
each server, and a cached reachability probe. Pytest-free, so the benchmarks
can use it with only the ``bench`` extra installed; ``tests/servers.py`` adds
the skip-or-fail rule on top.
"""

from __future__ import annotations

import os
import socket

RABBIT_URL = os.environ.get("NUBES_TEST_RABBIT_URL", "rabbit://guest:guest@127.0.0.1:5672/")
POSTGRES_URL = os.environ.get(
    "NUBES_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
MARIADB_URL = os.environ.get("NUBES_TEST_MARIADB_URL", "mysql+asyncmy://root@127.0.0.1:3306/test")

SERVERS = {
    "rabbit": (
        "127.0.0.1",
        5672,
        "apt-get install -y rabbitmq-server && rabbitmq-server -detached",
    ),
    # The management HTTP API nubes-manage broker uses (a plugin of the above).
    "rabbit-management": (
        "127.0.0.1",
        15672,
        "rabbitmq-plugins enable rabbitmq_management",
    ),
    "postgres": (
        "127.0.0.1",
        5432,
        "apt-get install -y postgresql && "
        "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    ),
    "mariadb": (
        "127.0.0.1",
        3306,
        "apt-get install -y mariadb-server && "
        "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd",
    ),
}

_seen: dict[str, bool] = {}


def reachable(name: str) -> bool:
    if name not in _seen:
        host, port, _ = SERVERS[name]
        try:
            with socket.create_connection((host, port), timeout=1.0):
                _seen[name] = True
        except OSError:
            _seen[name] = False
    return _seen[name]
