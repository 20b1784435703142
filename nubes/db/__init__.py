"""The database layer: models, migrations, engines and routing, queries, archiving.

- :mod:`nubes.db.models`     the schema (SQLAlchemy 2 declarative, typed)
- :mod:`nubes.db.migration`  ``db_sync`` / ``current_revision`` (Alembic, hand-written revisions)
- :mod:`nubes.db.engine`     ``Database`` with ``writer()`` / ``reader(allow_stale=...)``,
  URL normalisation, pools, SQLite pragmas, ``disable_db_access``
- :mod:`nubes.db.api`        the query functions, one module per resource
- :mod:`nubes.db.archive`    archive-deleted-rows and purge
- :mod:`nubes.db.manage`     the ``nubes-manage db`` subcommands

Compute never imports this package (DESIGN.md rule 1).
"""
