"""``/`` is a landing page that links to what a newcomer looks for, and ``/favicon.ico`` an icon
(issue 19, item 3)."""

from __future__ import annotations

from html.parser import HTMLParser

from flask.testing import FlaskClient

from antihack.shared.infra.settings import Settings
from tests.conftest import create_test_app


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.icons: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "a" and a.get("href"):
            self.hrefs.append(a["href"] or "")
        if tag == "link" and a.get("rel") == "icon":
            self.icons.append(a.get("href") or "")


def links_of(client: FlaskClient) -> Links:
    resp = client.get("/")
    assert resp.status_code == 200
    assert resp.mimetype == "text/html"
    parser = Links()
    parser.feed(resp.get_data(as_text=True))
    return parser


def test_the_landing_page_links_to_docs_admin_demo_and_health(
    base_settings: Settings,
) -> None:
    with_demo = create_test_app(base_settings.replace(demo_api_id="ak_demo")).test_client()
    found = links_of(with_demo)
    assert {"/docs", "/admin", "/demo", "/healthz", "/readyz"} <= set(found.hrefs)
    assert found.icons == ["/favicon.ico"]
    # Every link it shows answers (but /demo, whose key does not exist here).
    for href in found.hrefs:
        if href != "/demo":
            assert with_demo.get(href).status_code in (200, 503), href
    # With the demo off, the page does not link to a 404.
    assert "/demo" not in links_of(create_test_app(base_settings).test_client()).hrefs


def test_the_favicon_is_a_cached_svg(client: FlaskClient) -> None:
    resp = client.get("/favicon.ico")
    assert resp.status_code == 200
    assert resp.mimetype == "image/svg+xml"
    assert resp.get_data(as_text=True).startswith("<svg")
    assert "max-age=86400" in resp.headers["Cache-Control"]
    again = client.get("/favicon.ico", headers={"If-None-Match": resp.headers["ETag"]})
    assert again.status_code == 304
