"""Apply and check Alembic migrations from code (``antihack migrate``, ``make run``, tests)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.util.exc import CommandError

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(database_url: str) -> Config:
    cfg = Config(str(MIGRATIONS / "alembic.ini"))
    cfg.set_main_option("script_location", str(MIGRATIONS))
    # ConfigParser interpolation would eat a literal % in a password.
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


class MigrationsDisagree(Exception):
    """The database is not at the newest revision, or the tables differ from the migrations."""


def check(database_url: str) -> None:
    """Raise ``MigrationsDisagree`` (with Alembic's one-line reason) if the database is not at
    head or the tables and the migrations disagree (``alembic check``)."""
    try:
        command.check(alembic_config(database_url))
    except CommandError as exc:
        raise MigrationsDisagree(str(exc)) from None
