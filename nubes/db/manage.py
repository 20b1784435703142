"""``nubes-manage db ...``: schema sync, schema version, archiving.

Wiring into nubes-manage is one call::

    add_db_commands(subparsers)        # subparsers = parser.add_subparsers(...)
    ...
    args = parser.parse_args(argv)
    return args.handler(conf, args)    # every db subcommand sets ``handler``

A handler takes the loaded ConfigOpts and the parsed arguments and returns
the process exit code (the constants below). Handlers run their own event
loop (``asyncio.run``); call them from synchronous code.

Exit codes of ``archive-deleted-rows`` follow Nova's: 0 when there was
nothing (more) to archive, 1 when rows were archived (run again, or use
``--until-complete``, which still answers 1 if it moved anything), 2 for
bad arguments, 3 when the database cannot be reached, 4 when the database
refused the work (for instance: schema missing, run ``db sync``).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TextIO

import sqlalchemy.exc as sa_exc
from oslo_config import cfg

from nubes import exception
from nubes.db import archive, migration
from nubes.db.engine import Database, EngineOptions

EXIT_OK = 0
EXIT_NOTHING_LEFT = 0
EXIT_ARCHIVED_SOME = 1
EXIT_BAD_ARGUMENTS = 2
EXIT_DB_UNREACHABLE = 3
EXIT_DB_ERROR = 4

Handler = Callable[[cfg.ConfigOpts, argparse.Namespace], int]


def add_db_commands(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``db sync``, ``db version`` and ``db archive-deleted-rows``."""
    db_parser: argparse.ArgumentParser = subparsers.add_parser(
        "db", help="Database schema and maintenance."
    )
    commands = db_parser.add_subparsers(dest="db_command", metavar="COMMAND")
    commands.required = True

    sync = commands.add_parser("sync", help="Create the schema or upgrade it to the newest.")
    sync.add_argument(
        "version", nargs="?", default=migration.HEAD, help="Target revision (default: head)."
    )
    sync.set_defaults(handler=cmd_sync)

    version = commands.add_parser("version", help="Print the schema revision of the database.")
    version.set_defaults(handler=cmd_version)

    arch = commands.add_parser(
        "archive-deleted-rows",
        help="Move soft-deleted rows to the shadow tables.",
        description="Exit code: 0 nothing (more) to archive, 1 rows archived, "
        "2 bad arguments, 3 database unreachable, 4 database error.",
    )
    arch.add_argument(
        "--max-rows",
        default=str(archive.DEFAULT_MAX_ROWS),
        help=f"Rows to archive per pass (default {archive.DEFAULT_MAX_ROWS}).",
    )
    arch.add_argument(
        "--before",
        help="Only rows deleted before this date (ISO 8601, e.g. 2025-01-31 or "
        "2025-01-31T12:00:00+00:00; no zone means UTC).",
    )
    arch.add_argument(
        "--until-complete", action="store_true", help="Repeat passes until nothing is left."
    )
    arch.add_argument(
        "--purge", action="store_true", help="Then delete archived rows from the shadow tables."
    )
    arch.add_argument("--verbose", action="store_true", help="Print rows moved per table.")
    arch.set_defaults(handler=cmd_archive_deleted_rows)
    return db_parser


def parse_before(text: str) -> dt.datetime:
    """An ISO 8601 date or datetime as aware UTC (naive means UTC)."""
    value = dt.datetime.fromisoformat(text.strip())
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def parse_max_rows(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _fail(code: int, message: str, err: TextIO) -> int:
    print(message, file=err)
    return code


def _run(work: Callable[[], Coroutine[Any, Any, int]], err: TextIO) -> int:
    """Run ``work`` and map DB failures to exit codes."""
    try:
        return asyncio.run(work())
    except exception.DBConnectionError as exc:
        return _fail(EXIT_DB_UNREACHABLE, f"Database unreachable: {exc}", err)
    except (OSError, TimeoutError) as exc:
        return _fail(EXIT_DB_UNREACHABLE, f"Database unreachable: {type(exc).__name__}: {exc}", err)
    except exception.ConfigError as exc:
        return _fail(EXIT_BAD_ARGUMENTS, str(exc), err)
    except (exception.DBError, sa_exc.SQLAlchemyError) as exc:
        return _fail(
            EXIT_DB_ERROR,
            f"Database error (is the schema there? run 'nubes-manage db sync'): {exc}",
            err,
        )


def cmd_sync(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    url = conf.database.connection

    async def work() -> int:
        revision = await migration.db_sync(url, getattr(args, "version", migration.HEAD))
        print(f"Database schema at revision {revision}.")
        return EXIT_OK

    return _run(work, sys.stderr)


def cmd_version(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    url = conf.database.connection

    async def work() -> int:
        current = await migration.db_version(url)
        print(current if current is not None else "None (run 'nubes-manage db sync')")
        return EXIT_OK

    return _run(work, sys.stderr)


def _print_counts(title: str, counts: dict[str, int]) -> None:
    print(title)
    width = max(len(name) for name in counts)
    for name in sorted(counts):
        print(f"  {name.ljust(width)}  {counts[name]}")


def cmd_archive_deleted_rows(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    err = sys.stderr
    try:
        max_rows = parse_max_rows(str(args.max_rows))
    except ValueError as exc:
        return _fail(EXIT_BAD_ARGUMENTS, f"Invalid --max-rows {args.max_rows!r}: {exc}", err)
    before = None
    if args.before is not None:
        try:
            before = parse_before(args.before)
        except ValueError as exc:
            return _fail(EXIT_BAD_ARGUMENTS, f"Invalid --before {args.before!r}: {exc}", err)

    async def work() -> int:
        db = Database(conf.database.connection, options=EngineOptions.from_config(conf))
        try:
            result = await archive.archive_deleted_rows(
                db,
                max_rows=max_rows,
                before=before,
                until_complete=args.until_complete,
                purge=args.purge,
            )
        finally:
            await db.dispose()
        if result.archived:
            print(f"Archived {result.total_archived} rows.")
            if args.verbose:
                _print_counts("Rows moved per table:", dict(result.archived))
        else:
            print("Nothing to archive.")
        if result.purged:
            print(f"Purged {sum(result.purged.values())} archived rows.")
            if args.verbose:
                _print_counts("Rows purged per shadow table:", dict(result.purged))
        return EXIT_ARCHIVED_SOME if result.archived else EXIT_NOTHING_LEFT

    return _run(work, err)
