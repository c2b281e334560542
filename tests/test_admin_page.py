"""The admin page, /admin: sign-in with ANTIHACK_ADMIN_TOKEN for a signed sign-in cookie, CSRF
and Origin protection, and a dashboard whose numbers are the database's (real submissions, a
job finished FAILED by the lifecycle code, a webhook attempt that really failed); then the page
in a real headless Chromium against a real API server."""

from __future__ import annotations

import io
import re
import struct
import uuid
from collections.abc import Callable
from datetime import timedelta
from html import unescape
from pathlib import Path
from typing import Any

import pytest
import requests
from flask.testing import FlaskClient
from sqlalchemy import update
from werkzeug.test import TestResponse

from antihack.shared.domain.jobs import claim, error_body, finish
from antihack.shared.domain.keys import KeyOptions, update_key
from antihack.shared.domain.webhooks import claim_due, claim_lease
from antihack.shared.infra.db import transaction
from antihack.shared.infra.settings import Settings
from antihack.shared.infra.tables import Job, utcnow
from antihack.worker.webhook_tasks import attempt
from tests.browser import chromium
from tests.conftest import Key, create_test_app
from tests.devstack import free_port
from tests.helpers import no_face_capture

TOKEN = "test-admin-token"
SAME_ORIGIN = {"Origin": "http://localhost"}
COOKIE = "antihack_admin"


def login(client: FlaskClient, headers: dict[str, str] | None = None) -> TestResponse:
    return client.post("/admin/login", data={"token": TOKEN}, headers=headers or SAME_ORIGIN)


def set_cookie(resp: TestResponse) -> str | None:
    """The Set-Cookie header for the admin sign-in, if the response has one."""
    found = [h for h in resp.headers.getlist("Set-Cookie") if h.startswith(COOKIE + "=")]
    return found[0] if found else None


def page(resp: TestResponse) -> str:
    assert resp.mimetype == "text/html", resp.get_data(as_text=True)[:300]
    return resp.get_data(as_text=True)


def is_login_form(html: str) -> bool:
    return 'action="/admin/login"' in html and 'name="token"' in html and "usage-chart" not in html


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert found, "no logout form on the dashboard"
    return found.group(1)


def element(html: str, tag: str, attr: str, value: str) -> str:
    """The first ``<tag … attr="value" …>…</tag>`` of the page (the templates do not nest
    these elements)."""
    found = re.search(
        rf'<{tag}\b[^>]*\b{attr}="{re.escape(value)}"[^>]*>.*?</{tag}>', html, flags=re.S
    )
    assert found, f"no <{tag} {attr}={value!r}> on the page"
    return found.group(0)


def text(fragment: str) -> str:
    """What a reader sees of an HTML fragment: tags dropped, entities decoded, spaces joined."""
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def bars(html: str) -> dict[str, str]:
    """Chart bars: day → the bar's tooltip."""
    return {
        m.group(1): unescape(m.group(2))
        for m in re.finditer(
            r'<rect class="bar" data-day="([0-9-]+)".*?<title>(.*?)</title></rect>', html, re.S
        )
    }


def submit(client: FlaskClient, key: Key) -> str:
    resp = client.post(
        "/v1/jobs",
        headers=key.headers,
        data={"liveness_data_file": (io.BytesIO(no_face_capture()), "capture.pb")},
    )
    assert resp.status_code == 202, resp.get_json()
    request_id: str = resp.get_json()["request_id"]
    return request_id


def backdate(sessions: Any, job_id: str, days: int) -> None:
    """Data set-up: a job accepted ``days`` ago (the chart spans 30 days)."""
    with transaction(sessions) as s:
        s.execute(
            update(Job).where(Job.id == job_id).values(created_at=utcnow() - timedelta(days=days))
        )


def fail_with_a_given_up_webhook(settings: Settings, sessions: Any, job_id: str) -> str:
    """Finish the job FAILED as a worker records it; its webhook's one attempt (a schedule of
    one) really fails, so the delivery is given up. Returns the delivery's id."""
    with transaction(sessions) as s:
        job_claim = claim(s, job_id, timedelta(minutes=5), max_attempts=3)
        assert job_claim is not None
        finish(
            s,
            job_claim,
            error_body(job_id, "DETETION_FAILED", "frame 2 does not decode as JPEG or PNG"),
            reasons=["frame_undecodable"],
        )
    with transaction(sessions) as s:
        (delivery_id, token), *_ = claim_due(s, claim_lease(settings), job_id=job_id)
    one_try = settings.replace(webhook_schedule_s="0")
    assert attempt(sessions, one_try, delivery_id, token) == "failed"
    return delivery_id


# --- without a sign-in ------------------------------------------------------------------------


def test_without_a_sign_in_the_page_is_the_sign_in_form_and_leaks_nothing(
    client: FlaskClient, make_key: Callable[..., Key]
) -> None:
    key = make_key(name=f"partner-{uuid.uuid4().hex[:8]}", quota=7)
    forged = "eyJzaWQiOiJ4IiwiZnAiOiJ5In0.Z0000.bad-signature"
    for cookie in (None, forged, ""):
        if cookie is not None:
            client.set_cookie(COOKIE, cookie, path="/admin")
        resp = client.get("/admin")
        assert resp.status_code == 200
        html = page(resp)
        assert is_login_form(html)
        assert 'type="password"' in html
        assert key.api_id not in html and "partner-" not in html
        assert resp.headers["Cache-Control"] == "no-store"
        assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
        assert "script-src" not in resp.headers["Content-Security-Policy"]  # none at all
    # The stylesheet the page links is served.
    css = client.get("/static/admin.css")
    assert css.status_code == 200 and b"rect.bar" in css.data


@pytest.mark.parametrize(
    "token", ["wrong", "", " ", TOKEN + "x", TOKEN[:-1], TOKEN.upper(), "x" * 5000]
)
def test_a_wrong_token_gets_401_the_form_with_an_error_and_no_cookie(
    client: FlaskClient, token: str
) -> None:
    resp = client.post("/admin/login", data={"token": token}, headers=SAME_ORIGIN)
    assert resp.status_code == 401
    html = page(resp)
    assert is_login_form(html)
    assert "wrong admin token" in html
    assert set_cookie(resp) is None
    assert is_login_form(page(client.get("/admin")))


@pytest.mark.parametrize(
    "body",
    [
        {"data": {}},
        {"data": {"tok": TOKEN}},
        {"data": b'{"token": "test-admin-token"}', "content_type": "application/json"},
        {"data": b"token=test-admin-token", "content_type": "text/plain"},
    ],
    ids=["empty", "other-field", "json", "text"],
)
def test_a_login_that_is_not_the_form_is_refused(client: FlaskClient, body: dict[str, Any]) -> None:
    resp = client.post("/admin/login", headers=SAME_ORIGIN, **body)
    assert resp.status_code == 401
    assert "wrong admin token" in page(resp)
    assert set_cookie(resp) is None


# --- signing in and out -----------------------------------------------------------------------


def test_the_right_token_sets_a_signed_strict_httponly_cookie_and_shows_the_dashboard(
    client: FlaskClient,
) -> None:
    resp = login(client)
    assert resp.status_code == 303
    assert resp.headers["Location"] == "/admin"
    cookie = set_cookie(resp)
    assert cookie is not None
    flags = {part.strip().split("=")[0].lower(): part for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite", "path", "max-age"} <= set(flags)
    assert flags["samesite"].strip() == "SameSite=Strict"
    assert flags["path"].strip() == "Path=/admin"
    assert 3600 <= int(flags["max-age"].split("=")[1]) <= 12 * 3600
    assert "secure" not in flags  # plain HTTP here: a Secure cookie would never come back
    assert TOKEN not in cookie  # the token itself is not in the cookie
    dashboard = page(client.get("/admin"))
    assert "usage-chart" in dashboard and "Sign out" in dashboard


@pytest.mark.parametrize(
    "how",
    [{"base_url": "https://localhost"}, {"headers": {"X-Forwarded-Proto": "https"}}],
    ids=["https", "behind-a-tls-proxy"],
)
def test_over_https_the_cookie_is_secure(client: FlaskClient, how: dict[str, Any]) -> None:
    origin = "https://localhost" if "base_url" in how else "http://localhost"
    headers = {"Origin": origin, **how.get("headers", {})}
    kwargs = {k: v for k, v in how.items() if k != "headers"}
    resp = client.post("/admin/login", data={"token": TOKEN}, headers=headers, **kwargs)
    assert resp.status_code == 303
    cookie = set_cookie(resp)
    assert cookie is not None and "; Secure" in cookie


def test_changing_the_admin_token_or_the_secret_key_ends_every_sign_in(
    base_settings: Settings, client: FlaskClient
) -> None:
    login(client)
    cookie = client.get_cookie(COOKIE, path="/admin")
    assert cookie is not None
    for changed in (
        base_settings.replace(admin_token="a-new-admin-token"),
        base_settings.replace(secret_key="another-secret-key"),
    ):
        other = create_test_app(changed).test_client()
        other.set_cookie(COOKIE, cookie.value, path="/admin")
        assert is_login_form(page(other.get("/admin")))
    # The same settings still accept it.
    same = create_test_app(base_settings).test_client()
    same.set_cookie(COOKIE, cookie.value, path="/admin")
    assert "usage-chart" in page(same.get("/admin"))


def test_logout_clears_the_cookie(client: FlaskClient) -> None:
    login(client)
    csrf = csrf_of(page(client.get("/admin")))
    resp = client.post("/admin/logout", data={"csrf": csrf}, headers=SAME_ORIGIN)
    assert resp.status_code == 303 and resp.headers["Location"] == "/admin"
    cleared = set_cookie(resp)
    assert cleared is not None and cleared.startswith(f"{COOKIE}=;")
    assert "Max-Age=0" in cleared or "1970" in cleared
    assert is_login_form(page(client.get("/admin")))


# --- CSRF: SameSite=Strict cookie + Origin check + a token in the logout form -----------------


CROSS_SITE = [
    {"Origin": "https://evil.example"},
    {"Origin": "http://localhost.evil.example"},
    {"Origin": "null"},
    {"Referer": "https://evil.example/page"},
    {},  # neither Origin nor Referer: not a form of this page
]


@pytest.mark.parametrize("headers", CROSS_SITE, ids=lambda h: str(h) or "none")
def test_a_cross_site_login_is_refused_even_with_the_right_token(
    client: FlaskClient, headers: dict[str, str]
) -> None:
    resp = client.post("/admin/login", data={"token": TOKEN}, headers=headers)
    assert resp.status_code == 403
    assert "cross-site" in page(resp)
    assert set_cookie(resp) is None
    assert is_login_form(page(client.get("/admin")))


def test_a_same_origin_referer_is_enough_when_there_is_no_origin(client: FlaskClient) -> None:
    resp = login(client, headers={"Referer": "http://localhost/admin"})
    assert resp.status_code == 303 and set_cookie(resp) is not None


@pytest.mark.parametrize(
    "headers, csrf",
    [(CROSS_SITE[0], "right"), ({}, "right"), (SAME_ORIGIN, "wrong"), (SAME_ORIGIN, "")],
    ids=["cross-site", "no-origin", "wrong-token", "no-token"],
)
def test_a_forged_logout_is_refused_and_the_sign_in_stays(
    client: FlaskClient, headers: dict[str, str], csrf: str
) -> None:
    login(client)
    right = csrf_of(page(client.get("/admin")))
    value = right if csrf == "right" else csrf
    resp = client.post("/admin/logout", data={"csrf": value}, headers=headers)
    assert resp.status_code == 403
    assert set_cookie(resp) is None
    assert "usage-chart" in page(client.get("/admin"))


# --- the dashboard's numbers ------------------------------------------------------------------


def test_the_dashboard_shows_what_the_database_holds(
    base_settings: Settings, client: FlaskClient, make_key: Callable[..., Key], sessions: Any
) -> None:
    tag = uuid.uuid4().hex[:8]
    dead_port = free_port()  # nothing listens: every webhook attempt fails
    admin = {"Authorization": f"Bearer {TOKEN}"}
    created = client.post(
        "/admin/keys",
        headers=admin,
        json={
            "name": f"quota-{tag}",
            "quota": 5,
            "quota_period": "day",
            "webhook_url": f"http://127.0.0.1:{dead_port}/hook",
        },
    ).get_json()
    quota_key = Key(created["api_id"], created["api_secret"], "", created["webhook_secret"])
    open_key = make_key(name=f"<b>open</b>-{tag}", require_signed=True, require_session=True)
    revoked = make_key(name=f"revoked-{tag}")
    expired = make_key(name=f"expired-{tag}")
    with transaction(sessions) as s:
        update_key(s, expired.api_id, KeyOptions(expires_at=utcnow() - timedelta(days=1)))
    assert client.delete(f"/admin/keys/{revoked.api_id}", headers=admin).status_code == 200

    # Two real submissions charge the quota twice; one is dated three days back.
    first, second = submit(client, quota_key), submit(client, quota_key)
    backdate(sessions, first, days=3)
    # The second ends FAILED and its webhook is given up.
    delivery_id = fail_with_a_given_up_webhook(base_settings, sessions, second)

    login(client)
    html = page(client.get(f"/admin?key={quota_key.api_id}"))

    # Keys: status, signing, quota bar (used / limit of the current period), escaping.
    row = element(html, "tr", "data-api-id", quota_key.api_id)
    assert 'data-used="2" data-limit="5"' in row
    assert "2 / 5 per day" in text(row)
    assert 'width="48.0"' in row  # 2/5 of the 120 px track
    assert "active" in text(row)
    open_row = element(html, "tr", "data-api-id", open_key.api_id)
    assert "no limit" in text(open_row)
    assert text(open_row).count("required") == 2  # signed captures and capture sessions
    assert text(row).count("optional") == 2
    assert f"&lt;b&gt;open&lt;/b&gt;-{tag}" in open_row and "<b>open</b>" not in html
    assert "revoked" in text(element(html, "tr", "data-api-id", revoked.api_id))
    assert "expired" in text(element(html, "tr", "data-api-id", expired.api_id))

    # The chart for this key: one bar per day with jobs, the same numbers as GET /admin/usage.
    usage = client.get(f"/admin/usage?api_id={quota_key.api_id}&days=30", headers=admin)
    days = {d["date"]: d for d in usage.get_json()["keys"][0]["days"]}
    shown = bars(html)
    assert set(shown) == set(days) and len(shown) == 2
    for day, counts in days.items():
        assert shown[day] == (
            f"{day}: {counts['accepted']} accepted, {counts['succeeded']} succeeded, "
            f"{counts['failed']} failed, {counts['refunded']} refunded"
        )
    today = utcnow().date().isoformat()
    assert shown[today].endswith("1 accepted, 0 succeeded, 1 failed, 0 refunded")
    assert f'data-key="{quota_key.api_id}"' in html
    assert "2 accepted in all" in html

    # The failure and the undelivered webhook.
    failure = text(element(html, "tr", "data-job-id", second))
    assert f"quota-{tag}" in failure and "DETETION_FAILED" in failure
    assert "frame 2 does not decode as JPEG or PNG" in failure and "frame_undecodable" in failure
    delivery = text(element(html, "tr", "data-delivery-id", delivery_id))
    assert "failed" in delivery and f"127.0.0.1:{dead_port}/hook" in delivery
    assert '<td class="num">1</td>' in element(html, "tr", "data-delivery-id", delivery_id)
    assert "refused or failed" in delivery


def test_an_unknown_key_in_the_chart_is_a_clear_404(client: FlaskClient) -> None:
    login(client)
    resp = client.get("/admin?key=ak_<nope>")
    assert resp.status_code == 404
    html = page(resp)
    assert "no API key &#39;ak_&lt;nope&gt;&#39;" in html
    assert "usage-chart" in html  # the page for every key, with that said
    # A NUL never reaches the database (PostgreSQL would refuse it with an error).
    assert client.get("/admin?key=%00").status_code == 404
    nul = client.post("/admin/login", data={"token": "\x00"}, headers=SAME_ORIGIN)
    assert nul.status_code == 401


# --- a real browser ---------------------------------------------------------------------------


def test_the_admin_page_in_headless_chromium(
    start_api: Callable[..., str],
    base_settings: Settings,
    sessions: Any,
    tmp_path: Path,
) -> None:
    base = start_api()
    created = requests.post(
        base + "/admin/keys",
        headers={"Authorization": f"Bearer {TOKEN}"},
        json={
            "name": f"browser-{uuid.uuid4().hex[:8]}",
            "quota": 10,
            "quota_period": "month",
            "webhook_url": f"http://127.0.0.1:{free_port()}/hook",  # nothing listens
        },
        timeout=30,
    ).json()
    key = Key(created["api_id"], created["api_secret"], "", created["webhook_secret"])
    ids = []
    for _ in range(3):
        resp = requests.post(
            base + "/v1/jobs",
            headers=key.headers,
            files={"liveness_data_file": ("capture.pb", no_face_capture())},
            timeout=60,
        )
        assert resp.status_code == 202, resp.text
        ids.append(resp.json()["request_id"])
    backdate(sessions, ids[0], days=5)
    delivery_id = fail_with_a_given_up_webhook(base_settings, sessions, ids[2])

    shot = tmp_path / "admin.png"
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        tab = context.new_page()
        tab.goto(base + "/admin")
        tab.fill("#token", "not the token")
        tab.click("form.login button[type=submit]")
        assert tab.locator(".error").inner_text() == "wrong admin token"

        tab.fill("#token", TOKEN)
        tab.click("form.login button[type=submit]")
        tab.wait_for_selector("#usage-chart")
        cookie = next(c for c in context.cookies() if c["name"] == COOKIE)
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

        # Pick the key in the chart's form, as a person would.
        tab.select_option("#key", key.api_id)
        tab.click("form.select button[type=submit]")
        tab.wait_for_url(f"**/admin?key={key.api_id}")
        chart = tab.locator("#usage-chart rect.bar")
        assert chart.count() == 2  # today (2 jobs) and five days ago (1)
        titles = sorted(chart.nth(i).locator("title").text_content() or "" for i in range(2))
        assert titles[0].endswith("1 accepted, 0 succeeded, 0 failed, 0 refunded")
        assert titles[1].endswith("2 accepted, 0 succeeded, 1 failed, 0 refunded")
        heights = sorted(float(chart.nth(i).get_attribute("height") or 0) for i in range(2))
        assert heights[0] > 0 and heights[1] == pytest.approx(2 * heights[0], rel=0.01)
        # The stylesheet applied (CSP: style-src 'self'): bars are the accent colour.
        fill = chart.first.evaluate("e => getComputedStyle(e).fill")
        assert fill == "rgb(47, 111, 222)"

        quota = tab.locator(f'tr[data-api-id="{key.api_id}"] svg.quota-bar')
        assert quota.get_attribute("data-used") == "3"
        assert quota.get_attribute("data-limit") == "10"
        assert quota.locator("rect.fill").get_attribute("width") == "36.0"
        box = quota.bounding_box()
        assert box is not None and box["width"] == 120
        assert "3 / 10 per month" in tab.locator(f'tr[data-api-id="{key.api_id}"]').inner_text()

        failure = tab.locator(f'tr[data-job-id="{ids[2]}"]').inner_text()
        assert "DETETION_FAILED" in failure and "frame_undecodable" in failure
        delivery = tab.locator(f'tr[data-delivery-id="{delivery_id}"]').inner_text()
        assert "failed" in delivery and "refused or failed" in delivery

        tab.screenshot(path=str(shot), full_page=True)

        tab.click("#logout")
        tab.wait_for_selector("form.login")
        assert not [c for c in context.cookies() if c["name"] == COOKIE]

    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert width == 1280 and height >= 900  # the full page, at least one screen
    assert len(data) > 20_000  # a rendered page, not a blank one
