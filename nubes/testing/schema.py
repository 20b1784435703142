"""A test cloud's database schema: migrated to head, quickly for a new SQLite file.

The harnesses (:mod:`nubes.testing.allinone`, :mod:`nubes.testing.cloud`)
start hundreds of clouds in a test run, each on a new SQLite file; running
every migration for each cost about a second (mostly SQLite's syncs of each
DDL step). A new file is instead a copy of a database this process migrated
once, which is what the migrations would have made.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

from sqlalchemy.engine import make_url

from nubes.db import migration

#: This process's SQLite database migrated to head, copied for each new cloud.
_TEMPLATE: dict[str, Path] = {}


async def migrated(db_url: str) -> None:
    """The schema at ``db_url`` brought to head, as ``db_sync`` does.

    A new SQLite file is a copy of this process's migrated template;
    anything else (a server, an existing file, a URI) is migrated.
    """
    path = await asyncio.to_thread(_new_sqlite_file, db_url)
    if path is None:
        await migration.db_sync(db_url)
        return
    template = _TEMPLATE.get("head")
    if template is None:
        folder = tempfile.mkdtemp(prefix="nubes-template-")
        atexit.register(shutil.rmtree, folder, True)
        template = Path(folder) / "head.sqlite"
        await migration.db_sync(f"sqlite:///{template}")
        _TEMPLATE["head"] = template
    await asyncio.to_thread(_copy_database, template, path)


def _new_sqlite_file(db_url: str) -> str | None:
    url = make_url(db_url)
    path = url.database
    if url.get_backend_name() != "sqlite" or not path or path == ":memory:":
        return None
    if path.startswith("file:"):
        return None  # a URI (shared memory, options): migrated as given
    return None if os.path.exists(path) else path


def _copy_database(source_path: Path, target_path: str) -> None:
    # The backup API copies a consistent image whatever the template's journal holds.
    with contextlib.closing(sqlite3.connect(source_path)) as source:
        with contextlib.closing(sqlite3.connect(target_path)) as target:
            source.backup(target)
