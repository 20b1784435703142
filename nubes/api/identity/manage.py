"""``nubes-manage project|user|role ...``: identity administration for operators and scripts.

::

    nubes-manage project create NAME [--description D]
    nubes-manage project list
    nubes-manage project set NAME --enable|--disable
    nubes-manage project delete NAME
    nubes-manage user create NAME --password P [--project PROJ] [--role ROLE ...]
    nubes-manage user list
    nubes-manage user set NAME --enable|--disable
    nubes-manage user delete NAME
    nubes-manage role add --user U --project P ROLE
    nubes-manage role remove --user U --project P ROLE
    nubes-manage role list

Removing a role, disabling or deleting a user and disabling or deleting a
project take effect at once: the tokens they concern stop working
(:mod:`nubes.db.api.identity`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from oslo_config import cfg

from nubes import exception
from nubes.api.bootstrap import ensure_user
from nubes.cmd import common
from nubes.db import engine
from nubes.db.api import identity
from nubes.db.api import roles as roles_db

#: Exit codes: 0 done, 1 nothing to do or not found, 2 bad arguments.
EXIT_NOT_FOUND = 1


def _run(conf: cfg.ConfigOpts, fn: Callable[[engine.Database], Awaitable[int]]) -> int:
    async def main() -> int:
        db = engine.Database.from_config(conf)
        try:
            return await fn(db)
        except exception.DBDuplicateEntry as exc:
            print(f"nubes-manage: already exists: {exc.message}", file=sys.stderr)
            return EXIT_NOT_FOUND
        except exception.NotFound as exc:
            print(f"nubes-manage: {exc.message}", file=sys.stderr)
            return EXIT_NOT_FOUND
        finally:
            await db.dispose()

    return common.run(main())


def _project_create(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    async def go(db: engine.Database) -> int:
        async with db.writer() as conn:
            row = await identity.project_create(conn, args.name, description=args.description)
        print(row["id"])
        return 0

    return _run(conf, go)


def _project_list(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    async def go(db: engine.Database) -> int:
        async with db.reader() as conn:
            for row in await identity.project_get_all(conn):
                print(f"{row['id']}  {row['name']}")
        return 0

    return _run(conf, go)


def _project_set(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    async def go(db: engine.Database) -> int:
        async with db.writer() as conn:
            project = await identity.project_get(conn, args.name)
            await identity.project_update(conn, project["id"], {"enabled": args.enabled})
        return 0

    return _run(conf, go)


def _project_delete(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    async def go(db: engine.Database) -> int:
        async with db.writer() as conn:
            project = await identity.project_get(conn, args.name)
            await identity.project_delete(conn, project["id"])
        return 0

    return _run(conf, go)


def _user_create(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    roles = args.role or (["member"] if args.project else [])
    if roles and not args.project:
        print("nubes-manage: --role needs --project", file=sys.stderr)
        return common.EXIT_CONFIG_ERROR

    async def go(db: engine.Database) -> int:
        async with db.reader() as conn:
            if await identity.user_get_by_name(conn, args.name) is not None:
                print(f"nubes-manage: user {args.name} already exists", file=sys.stderr)
                return EXIT_NOT_FOUND
        row = await ensure_user(db, args.name, args.password, args.project, roles)
        print(row["id"])
        return 0

    return _run(conf, go)


def _user_list(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    async def go(db: engine.Database) -> int:
        async with db.reader() as conn:
            for row in await identity.user_get_all(conn):
                print(f"{row['id']}  {row['name']}")
        return 0

    return _run(conf, go)


def _user_set(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    async def go(db: engine.Database) -> int:
        async with db.writer() as conn:
            user = await identity.user_get(conn, args.name)
            await identity.user_update(conn, user["id"], {"enabled": args.enabled})
        return 0

    return _run(conf, go)


def _user_delete(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    async def go(db: engine.Database) -> int:
        async with db.writer() as conn:
            user = await identity.user_get(conn, args.name)
            await identity.user_delete(conn, user["id"])
        return 0

    return _run(conf, go)


def _add_enable_flags(parser: Any) -> None:
    flag = parser.add_mutually_exclusive_group(required=True)
    flag.add_argument("--enable", dest="enabled", action="store_true", default=None)
    flag.add_argument(
        "--disable",
        dest="enabled",
        action="store_false",
        help="its tokens stop working at once",
    )


def _role_change(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    async def go(db: engine.Database) -> int:
        async with db.writer() as conn:
            user = await identity.user_get(conn, args.user)
            project = await identity.project_get(conn, args.project)
            if args.action == "add":
                changed = await roles_db.assignment_add(conn, user["id"], project["id"], args.role)
            else:
                changed = await roles_db.assignment_remove(
                    conn, user["id"], project["id"], args.role
                )
        if not changed:
            print(f"nubes-manage: nothing to {args.action}", file=sys.stderr)
            return EXIT_NOT_FOUND
        return 0

    return _run(conf, go)


def _role_list(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    async def go(db: engine.Database) -> int:
        async with db.writer() as conn:
            await roles_db.bootstrap_roles(conn)
            for row in await roles_db.role_get_all(conn):
                print(f"{row['id']}  {row['name']}")
        return 0

    return _run(conf, go)


def add_identity_commands(sub: Any) -> None:
    project = sub.add_parser("project", help="identity projects").add_subparsers(
        dest="action", required=True
    )
    p = project.add_parser("create", help="create a project (prints its id)")
    p.add_argument("name")
    p.add_argument("--description")
    p.set_defaults(handler=_project_create)
    project.add_parser("list", help="list projects").set_defaults(handler=_project_list)
    p = project.add_parser("set", help="enable or disable a project")
    p.add_argument("name", help="project name or id")
    _add_enable_flags(p)
    p.set_defaults(handler=_project_set)
    p = project.add_parser("delete", help="delete a project (its tokens stop working)")
    p.add_argument("name", help="project name or id")
    p.set_defaults(handler=_project_delete)

    user = sub.add_parser("user", help="identity users").add_subparsers(
        dest="action", required=True
    )
    u = user.add_parser("create", help="create a user (prints its id)")
    u.add_argument("name")
    u.add_argument("--password", required=True)
    u.add_argument("--project", help="project (name or id) to give the roles on")
    u.add_argument("--role", action="append", help="role on --project (repeatable; default member)")
    u.set_defaults(handler=_user_create)
    user.add_parser("list", help="list users").set_defaults(handler=_user_list)
    u = user.add_parser("set", help="enable or disable a user")
    u.add_argument("name", help="user name or id")
    _add_enable_flags(u)
    u.set_defaults(handler=_user_set)
    u = user.add_parser("delete", help="delete a user (its tokens stop working)")
    u.add_argument("name", help="user name or id")
    u.set_defaults(handler=_user_delete)

    role = sub.add_parser("role", help="roles and role assignments").add_subparsers(
        dest="action", required=True
    )
    for action in ("add", "remove"):
        r = role.add_parser(
            action,
            help=f"{action} a role assignment"
            + (" (the user's tokens on the project stop working)" if action == "remove" else ""),
        )
        r.add_argument("role", help="admin, manager, member, reader (or any name)")
        r.add_argument("--user", required=True, help="user name or id")
        r.add_argument("--project", required=True, help="project name or id")
        r.set_defaults(handler=_role_change)
    role.add_parser("list", help="list roles").set_defaults(handler=_role_list)
