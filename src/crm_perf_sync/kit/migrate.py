"""Schema migrations (Alembic), callable from the CLI, the service start and the tests."""

from __future__ import annotations

import re
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import ResolutionError
from alembic.util.exc import CommandError
from sqlalchemy import Engine

from crm_perf_sync.kit.errors import DatabaseUnavailable
from crm_perf_sync.kit.resources import shipped


def _script_location() -> Path:
    return shipped("_migrations", "migrations", "env.py")


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(_script_location()))
    return config


class UnknownRevision(DatabaseUnavailable):
    """The database was migrated by a version of crm-perf-sync this one does not know."""


def check_known(engine: Engine) -> None:
    """Raise :class:`UnknownRevision` if the database's schema revision is not one of ours."""
    current = current_revision(engine)
    if current is None:
        return
    script = ScriptDirectory.from_config(alembic_config())
    if current not in {rev.revision for rev in script.walk_revisions()}:
        raise UnknownRevision(
            f"the database schema is at revision {current}, which this version of crm-perf-sync does not "
            f"know (its newest is {script.get_current_head()}): it was migrated by another version; use that "
            "version, or a new database"
        )


def is_known_revision(revision: str) -> bool:
    """``revision`` names a migration of this version: an id (or its prefix), ``head``, ``base``,
    or a step relative to the current one (``-1``, ``+2``)."""
    if revision in ("head", "heads", "base") or re.fullmatch(r"[+-]\d+", revision):
        return True
    try:
        return bool(ScriptDirectory.from_config(alembic_config()).get_revisions(revision))
    except (ResolutionError, CommandError):
        return False


def upgrade(engine: Engine, revision: str = "head") -> None:
    check_known(engine)
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def downgrade(engine: Engine, revision: str) -> None:
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def is_at_head(engine: Engine) -> bool:
    return current_revision(engine) == head_revision()
