"""The test tiers that tests/conftest.py assigns, and its rolled-back ``db`` session."""

from __future__ import annotations

import subprocess
import uuid
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from antihack.shared.domain.keys import KeyOptions, create_key
from antihack.shared.infra.db import transaction
from antihack.shared.infra.settings import Settings
from antihack.shared.infra.tables import ApiKey
from tests import devstack
from tests.browser import chromium
from tests.conftest import _reaches

# One name per run: the second test looks for the key that the first one wrote and committed.
NAME = f"db-fixture-{uuid.uuid4().hex}"


def named(session: Session) -> list[str]:
    return list(session.scalars(select(ApiKey.id).where(ApiKey.name == NAME)))


# Only the db session here: on SQLite it holds the write lock, so another connection would wait.
def test_a_commit_in_the_db_session_stays_inside_the_test(
    db: Session, base_settings: Settings
) -> None:
    key, _ = create_key(db, base_settings.secret_key, KeyOptions(name=NAME))
    db.commit()  # releases the savepoint: the outer transaction is still open
    assert named(db) == [key.id]


def test_the_next_test_does_not_see_it(sessions: Any) -> None:
    with transaction(sessions) as fresh:
        assert named(fresh) == []


# --- what makes a test e2e or browser ---------------------------------------------------------


def runs_a_command() -> None:
    subprocess.run(["true"], check=True)


def starts_an_api() -> None:
    devstack.start_api(Settings(), devstack.ROOT / "api.log")


def calls_a_helper_that_starts_one() -> None:
    starts_an_api()


def opens_chromium() -> None:
    with chromium():
        pass


def waits_for_something() -> None:
    devstack.wait_until(lambda: True, 1, "nothing")


@pytest.mark.parametrize(
    ("function", "tier"),
    [
        (runs_a_command, "e2e"),
        (starts_an_api, "e2e"),
        (calls_a_helper_that_starts_one, "e2e"),
        (opens_chromium, "browser"),
        (waits_for_something, None),
        (named, None),
    ],
)
def test_process_and_browser_use_is_read_from_the_code(function: Any, tier: str | None) -> None:
    assert _reaches(function, set()) == tier


def test_each_test_here_has_the_tier_of_what_it_uses(request: pytest.FixtureRequest) -> None:
    tiers = {
        item.name.split("[")[0]: {m.name for m in item.iter_markers()} & {"unit", "integration"}
        for item in request.session.items
        if item.path == request.path
    }
    assert tiers == {
        "test_a_commit_in_the_db_session_stays_inside_the_test": {"integration"},
        "test_the_next_test_does_not_see_it": {"integration"},
        "test_process_and_browser_use_is_read_from_the_code": {"unit"},
        "test_each_test_here_has_the_tier_of_what_it_uses": {"unit"},
    }
