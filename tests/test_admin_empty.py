"""/admin on a deployment that never sent a webhook says so, rather than "every webhook was
delivered" (issue 19, item 6)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from antihack.shared.infra.migrate import upgrade
from antihack.shared.infra.settings import Settings
from tests.conftest import _postgres_database, create_test_app
from tests.test_admin_page import SAME_ORIGIN, TOKEN, element, page, text


@pytest.fixture
def empty_client(base_settings: Settings, tmp_path: Path) -> Iterator[FlaskClient]:
    """An app on a database of its own, with no job and no webhook delivery in it."""
    pg = os.environ.get("ANTIHACK_TEST_DATABASE_URL")
    drop: Callable[[], None] | None = None
    if pg:
        url, drop = _postgres_database(pg)
    else:
        url = f"sqlite:///{tmp_path / 'empty.db'}"
    upgrade(url)
    app = create_test_app(base_settings.replace(database_url=url))
    try:
        yield app.test_client()
    finally:
        app.extensions["antihack"].sessions.kw["bind"].dispose()
        if drop is not None:
            drop()


def test_with_no_delivery_at_all_the_dashboard_says_no_webhook_was_sent_yet(
    empty_client: FlaskClient,
) -> None:
    resp = empty_client.post("/admin/login", data={"token": TOKEN}, headers=SAME_ORIGIN)
    assert resp.status_code in (200, 303), resp.get_data(as_text=True)[:300]
    html = page(empty_client.get("/admin"))
    webhooks = text(element(html, "section", "id", "webhooks"))
    assert "no webhook was sent yet" in webhooks
    assert "every webhook was delivered" not in webhooks
