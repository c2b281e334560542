"""What the command modules share: settings from the environment and a database transaction."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from antihack.shared.infra.settings import Settings

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def load_settings() -> Settings:
    """The settings from the environment, prepared; a bad value is a message, not a traceback."""
    from antihack.shared.infra.runtime import prepare
    from antihack.shared.infra.settings import Settings, SettingsError

    try:
        settings = prepare(Settings.from_env())
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    return settings


def with_session(fn: Callable[[Session, Settings], T]) -> T:
    """Run ``fn`` in one transaction; the seed's errors become messages."""
    from antihack.shared.domain.errors import ApiError
    from antihack.shared.infra.db import make_engine, make_sessionmaker, transaction

    settings = load_settings()
    engine = make_engine(settings.effective_database_url)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            return fn(session, settings)
    except ApiError as exc:
        raise click.ClickException(exc.reason) from None
    finally:
        engine.dispose()


def iso(value: str | None) -> datetime | None:
    """An ISO 8601 option with a time zone, or None."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"not ISO 8601: {value}") from None
    if parsed.tzinfo is None:
        raise click.BadParameter("give a time zone, e.g. 2027-01-01T00:00:00+00:00")
    return parsed


def json_option(help_text: str = "Print one JSON document on stdout.") -> Callable[[F], F]:
    """The ``--json`` flag every command that prints data takes (as ``as_json``)."""
    return click.option("--json", "as_json", is_flag=True, help=help_text)
