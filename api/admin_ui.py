"""The admin page, ``/admin``: keys and their quota, usage per day, recent failures and
undelivered webhooks, rendered on the server (no script) behind the admin token.

The JSON admin API (``api/admin.py``) keeps its bearer token. This page trades the same token,
typed once into a form, for a sign-in cookie: signed with a key derived from
ANTIHACK_SECRET_KEY (itsdangerous), HttpOnly, SameSite=Strict, Secure over HTTPS, limited to
``/admin`` and valid for ``SIGN_IN_S``. It carries a random sign-in id and a fingerprint of the
admin token, so changing ANTIHACK_ADMIN_TOKEN ends every sign-in.

CSRF: the cookie is SameSite=Strict, so a cross-site form post arrives without it; every POST
must also carry an ``Origin`` (or, lacking one, a ``Referer``) of this host, so a cross-site
login is refused too; and the logout form carries a token derived from the sign-in id.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, redirect, render_template, request, url_for
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response as BaseResponse

from antihack.api.context import db, services
from antihack.shared.domain.quota import daily_usage, used_now
from antihack.shared.infra.tables import (
    DELIVERY_FAILED,
    DISABLED,
    FAILED,
    PENDING,
    ApiKey,
    Job,
    JobResult,
    WebhookDelivery,
    utcnow,
)

bp = Blueprint("admin_ui", __name__)

COOKIE = "antihack_admin"
COOKIE_PATH = "/admin"
SIGN_IN_S = 8 * 3600
# What the page lists at most: it is one request, and each list is one bounded query.
MAX_KEYS = 500
RECENT = 20
CHART_DAYS = 30
# Everything this page sends comes from this server; no script at all.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


# --- sign-in ----------------------------------------------------------------------------------


def _serializer() -> URLSafeTimedSerializer:
    # The salt, the cookie's name and its payload keys (sid: the sign-in id, fp: the token's
    # fingerprint) keep their first names, so that cookies already issued stay valid.
    return URLSafeTimedSerializer(services().settings.secret_key, salt="antihack.admin-session")


def _mac(purpose: str, value: str) -> str:
    # A key of this page's own, so that no MAC here can equal one made elsewhere with the
    # server secret (API-secret hashes are HMAC(secret_key, secret)).
    secret = services().settings.secret_key.encode()
    key = hmac.new(secret, b"antihack.admin-page", hashlib.sha256).digest()
    return hmac.new(key, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()


def _token_fingerprint() -> str:
    return _mac("admin-token", services().settings.admin_token)


def _sign_in_id() -> str | None:
    """The sign-in id of a valid, unexpired cookie made for the current admin token."""
    raw = request.cookies.get(COOKIE)
    if not raw or not services().settings.admin_token:
        return None
    try:
        data = _serializer().loads(raw, max_age=SIGN_IN_S)
    except BadSignature:  # also SignatureExpired
        return None
    if not isinstance(data, dict):
        return None
    sign_in_id, fingerprint = data.get("sid"), data.get("fp")
    if not isinstance(sign_in_id, str) or not isinstance(fingerprint, str):
        return None
    if not hmac.compare_digest(fingerprint.encode(), _token_fingerprint().encode()):
        return None
    return sign_in_id


def _csrf_token(sign_in_id: str) -> str:
    return _mac("csrf", sign_in_id)


def _same_origin() -> bool:
    """The POST comes from a page of this host: Origin, or else Referer, names it."""
    source = request.headers.get("Origin") or request.headers.get("Referer") or ""
    try:
        parts = urlsplit(source)
    except ValueError:
        return False
    return (
        parts.scheme in ("http", "https")
        and bool(parts.netloc)
        and parts.netloc.lower() == request.host.lower()
    )


def _https() -> bool:
    # Behind a TLS-terminating proxy the app sees plain HTTP; the proxy's header only ever adds
    # the Secure flag, so trusting it cannot weaken the cookie.
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return request.is_secure or forwarded == "https"


def _page(template: str, status: int = 200, **context: Any) -> Response:
    context.setdefault("error", None)
    html = render_template(template, sign_in_hours=SIGN_IN_S // 3600, **context)
    response = Response(html, status=status, mimetype="text/html")
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def _refused(reason: str) -> Response:
    return _page("admin_login.html", 403, error=reason)


# --- routes -----------------------------------------------------------------------------------


@bp.get("/admin")
def dashboard() -> Response:
    """The dashboard with a valid sign-in; the login form otherwise."""
    sign_in_id = _sign_in_id()
    if sign_in_id is None:
        return _page("admin_login.html")
    data = Dashboard.read(db(), request.args.get("key") or None)
    if data.unknown_key is not None:
        return _page(
            "admin_dashboard.html",
            404,
            d=data,
            csrf=_csrf_token(sign_in_id),
            error=f"no API key {data.unknown_key!r}: showing every key",
        )
    return _page("admin_dashboard.html", d=data, csrf=_csrf_token(sign_in_id), error=None)


@bp.post("/admin/login")
def login() -> BaseResponse:
    if not _same_origin():
        return _refused("cross-site login refused: the form must be posted from this page")
    expected = services().settings.admin_token
    given = request.form.get("token", "").strip()
    if not expected or not given or not hmac.compare_digest(given.encode(), expected.encode()):
        return _page("admin_login.html", 401, error="wrong admin token")
    cookie = _serializer().dumps({"sid": secrets.token_hex(16), "fp": _token_fingerprint()})
    response = redirect(url_for("admin_ui.dashboard"), 303)
    response.set_cookie(
        COOKIE,
        cookie,
        max_age=SIGN_IN_S,
        path=COOKIE_PATH,
        secure=_https(),
        httponly=True,
        samesite="Strict",
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/admin/logout")
def logout() -> BaseResponse:
    if not _same_origin():
        return _refused("cross-site logout refused: the form must be posted from this page")
    sign_in_id = _sign_in_id()
    given = request.form.get("csrf", "")
    if sign_in_id is not None and not hmac.compare_digest(
        given.encode(), _csrf_token(sign_in_id).encode()
    ):
        return _refused("logout refused: the form's token does not match this sign-in")
    response = redirect(url_for("admin_ui.dashboard"), 303)
    response.delete_cookie(
        COOKIE, path=COOKIE_PATH, secure=_https(), httponly=True, samesite="Strict"
    )
    response.headers["Cache-Control"] = "no-store"
    return response


# --- what the page shows ----------------------------------------------------------------------


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else ""


@dataclass(frozen=True)
class KeyRow:
    api_id: str
    name: str
    status: str  # active | expired | revoked
    require_signed: bool
    require_session: bool  # the key option: every capture needs a capture session
    period: str
    used: int
    limit: int | None
    accepted_30d: int
    rate: str
    expires_at: str

    @property
    def fraction(self) -> float:
        """Share of the quota used, 0..1 (a limit of 0 is full)."""
        if self.limit is None:
            return 0.0
        return 1.0 if self.limit <= 0 else min(1.0, self.used / self.limit)

    @property
    def level(self) -> str:
        return "full" if self.fraction >= 1 else "high" if self.fraction >= 0.8 else "ok"


@dataclass(frozen=True)
class Bar:
    day: str
    x: float
    y: float
    width: float
    height: float
    counts: dict[str, int]

    @property
    def title(self) -> str:
        c = self.counts
        return (
            f"{self.day}: {c['accepted']} accepted, {c['succeeded']} succeeded, "
            f"{c['failed']} failed, {c['refunded']} refunded"
        )


@dataclass(frozen=True)
class Tick:
    label: str
    x: float
    y: float


@dataclass(frozen=True)
class Chart:
    """Jobs accepted per UTC day as SVG geometry: one bar per day with any job."""

    width: int
    height: int
    left: int
    top: int
    plot_width: int
    plot_height: int
    bars: list[Bar]
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    days: list[tuple[str, dict[str, int]]]
    total: int

    @classmethod
    def build(cls, days: list[tuple[str, dict[str, int]]]) -> Chart:
        width, height, left, right, top, bottom = 760, 250, 52, 16, 14, 40
        plot_w, plot_h = width - left - right, height - top - bottom
        peak = max((c["accepted"] for _, c in days), default=0)
        scale = _nice_ceiling(peak)
        slot = plot_w / max(1, len(days))
        bars: list[Bar] = []
        x_ticks: list[Tick] = []
        for i, (day, counts) in enumerate(days):
            centre = left + slot * (i + 0.5)
            if i % 5 == 0 or i == len(days) - 1:
                x_ticks.append(Tick(day[5:], centre, top + plot_h + 16))
            if not any(counts.values()):
                continue
            h = plot_h * counts["accepted"] / scale
            bars.append(Bar(day, centre - slot * 0.35, top + plot_h - h, slot * 0.7, h, counts))
        y_ticks = [
            Tick(str(v), left - 6, top + plot_h - plot_h * v / scale)
            for v in (0, scale // 2, scale)
        ]
        total = sum(c["accepted"] for _, c in days)
        return cls(width, height, left, top, plot_w, plot_h, bars, y_ticks, x_ticks, days, total)


def _nice_ceiling(value: int) -> int:
    """The smallest of 2, 4, 10, 20, 40, 100, … at or above ``value`` (even, so that half of it
    is a whole tick)."""
    step = 2
    while step < value:
        step = step * 5 // 2 if str(step).startswith("4") else step * 2
    return step


@dataclass(frozen=True)
class Failure:
    job_id: str
    api_id: str
    key_name: str
    when: str
    status: str
    reason: str
    reasons: str


@dataclass(frozen=True)
class Undelivered:
    delivery_id: str
    api_id: str
    key_name: str
    job_id: str
    url: str
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str
    next_attempt_at: str
    created_at: str


@dataclass(frozen=True)
class Dashboard:
    now: str
    keys: list[KeyRow]
    keys_total: int
    selected: str | None
    unknown_key: str | None
    chart: Chart
    failures: list[Failure]
    undelivered: list[Undelivered]
    undelivered_counts: dict[str, int]
    # Every delivery ever made, whatever its state: 0 means no webhook was sent yet.
    deliveries_total: int

    @classmethod
    def read(cls, session: Session, selected: str | None) -> Dashboard:
        now = utcnow()
        keys = list(session.scalars(select(ApiKey).order_by(ApiKey.created_at).limit(MAX_KEYS)))
        total = len(keys)
        if total == MAX_KEYS:
            total = int(session.scalar(select(func.count()).select_from(ApiKey)) or 0)
        names = {k.id: k.name for k in keys}
        unknown = None
        if selected is not None and selected not in names:
            unknown, selected = selected, None
        since = (now - timedelta(days=CHART_DAYS - 1)).date()
        # The same per-day counts as GET /admin/usage, for the listed keys.
        per_key = daily_usage(session, list(names), since)
        shown = {selected: per_key.get(selected, {})} if selected else per_key
        undelivered, counts = _undelivered(session, names)
        return cls(
            now=_when(now),
            keys=_key_rows(session, keys, per_key, now),
            keys_total=total,
            selected=selected,
            unknown_key=unknown,
            chart=Chart.build(_days(shown, since, now.date())),
            failures=_failures(session, names),
            undelivered=undelivered,
            undelivered_counts=counts,
            deliveries_total=int(
                session.scalar(select(func.count()).select_from(WebhookDelivery)) or 0
            ),
        )


def _key_rows(
    session: Session,
    keys: list[ApiKey],
    per_key: dict[str, dict[str, dict[str, int]]],
    now: datetime,
) -> list[KeyRow]:
    used = used_now(session, [(k.id, k.quota_period) for k in keys], now)
    rows = []
    for k in keys:
        status = "active"
        if k.revoked_at is not None:
            status = "revoked"
        elif k.expires_at is not None and k.expires_at <= now:
            status = "expired"
        accepted = sum(c["accepted"] for c in per_key.get(k.id, {}).values())
        rate = f"{k.rate_per_s:g}/s, burst {k.burst or 1}" if k.rate_per_s else "no limit"
        rows.append(
            KeyRow(
                api_id=k.id,
                name=k.name,
                status=status,
                require_signed=k.require_signed,
                require_session=k.require_session,
                period=k.quota_period,
                used=used.get(k.id, 0),
                limit=k.quota_limit,
                accepted_30d=accepted,
                rate=rate,
                expires_at=_when(k.expires_at),
            )
        )
    return rows


def _days(
    per_key: dict[str, dict[str, dict[str, int]]], since: Any, today: Any
) -> list[tuple[str, dict[str, int]]]:
    """Every day from ``since`` to ``today``, counts summed over the keys."""
    out = []
    day = since
    while day <= today:
        iso = day.isoformat()
        counts = {"accepted": 0, "succeeded": 0, "failed": 0, "refunded": 0}
        for days in per_key.values():
            for name, n in days.get(iso, {}).items():
                counts[name] += n
        out.append((iso, counts))
        day += timedelta(days=1)
    return out


def _failures(session: Session, names: dict[str, str]) -> list[Failure]:
    """The latest failed jobs (FAILED is every result whose status is not OK)."""
    rows = session.execute(
        select(
            Job.id,
            Job.api_key_id,
            Job.finished_at,
            Job.result_status,
            JobResult.body,
            JobResult.reasons,
        )
        .outerjoin(JobResult, JobResult.job_id == Job.id)
        .where(Job.status == FAILED)
        .order_by(Job.finished_at.desc(), Job.id)
        .limit(RECENT)
    ).all()
    out = []
    for job_id, key_id, finished, status, body, reasons in rows:
        body = body if isinstance(body, dict) else {}
        out.append(
            Failure(
                job_id=job_id,
                api_id=key_id,
                key_name=names.get(key_id, ""),
                when=_when(finished),
                status=str(status or body.get("status") or FAILED),
                reason=str(body.get("reason") or ""),
                reasons=", ".join(str(r) for r in reasons or []),
            )
        )
    return out


def _undelivered(
    session: Session, names: dict[str, str]
) -> tuple[list[Undelivered], dict[str, int]]:
    """Deliveries waiting for a retry after a failed attempt, given up, or disabled (410)."""
    condition = or_(
        WebhookDelivery.status.in_([DELIVERY_FAILED, DISABLED]),
        and_(WebhookDelivery.status == PENDING, WebhookDelivery.attempts > 0),
    )
    found = session.scalars(
        select(WebhookDelivery)
        .where(condition)
        .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id)
        .limit(RECENT)
    )
    rows = [
        Undelivered(
            delivery_id=d.id,
            api_id=d.api_key_id,
            key_name=names.get(d.api_key_id, ""),
            job_id=d.job_id,
            url=d.url,
            status=d.status,
            attempts=d.attempts,
            last_status_code=d.last_status_code,
            last_error=d.last_error or "",
            next_attempt_at=_when(d.next_attempt_at) if d.status == PENDING else "",
            created_at=_when(d.created_at),
        )
        for d in found
    ]
    counts = {
        str(status): int(n)
        for status, n in session.execute(
            select(WebhookDelivery.status, func.count())
            .where(condition)
            .group_by(WebhookDelivery.status)
        )
    }
    return rows, counts
