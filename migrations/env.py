"""Alembic environment: the URL comes from the config (set by infra/migrate.py) or settings."""

from __future__ import annotations

from alembic import context

import antihack.shared.infra.tables  # noqa: F401  (registers every table on Base.metadata)
from antihack.shared.infra.db import Base, make_engine
from antihack.shared.infra.settings import Settings

config = context.config
url = config.get_main_option("sqlalchemy.url") or Settings.from_env().effective_database_url


def run_offline() -> None:
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
