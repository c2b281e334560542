"""Webhook deliveries: a key lists and redelivers its own; admins read anyone's."""

from __future__ import annotations

import logging

from flask import Blueprint, request
from flask.typing import ResponseReturnValue

from antihack.api.app_helpers import model_response
from antihack.api.auth import admin_only, client_key, current_key
from antihack.api.context import db, services
from antihack.shared.domain import webhooks
from antihack.shared.domain.errors import ApiError
from antihack.shared.domain.jobs import get_owned_job
from antihack.shared.domain.schemas import WebhookDelivery as DeliveryBody
from antihack.shared.domain.schemas import WebhookDeliveryPage
from antihack.shared.infra.tables import WebhookDelivery

log = logging.getLogger(__name__)
bp = Blueprint("webhooks", __name__)

DEFAULT_PAGE = 50


def _page(api_key_id: str | None) -> ResponseReturnValue:
    raw = request.args.get("limit", str(DEFAULT_PAGE))
    if not raw.isdecimal():  # not isdigit(): "²" is a digit that int() refuses (was a 500)
        raise ApiError(
            "INVALID_ARGUMENT", f"limit must be an integer from 1 to {webhooks.MAX_PAGE}"
        )
    limit = int(raw)
    found = webhooks.list_deliveries(
        db(),
        api_key_id=api_key_id,
        # An empty ``status=`` is not a state: refused like any other (the schema's enum).
        status=request.args.get("status"),
        limit=limit,
        before=request.args.get("before") or None,
    )
    return model_response(
        WebhookDeliveryPage,
        {
            "deliveries": [webhooks.delivery_view(d) for d in found],
            # Pass as ``before`` for the next page; null on the last one.
            "next_before": found[-1].id if len(found) == limit else None,
        },
    )


def _send_now(delivery: WebhookDelivery) -> ResponseReturnValue:
    """Commit, then publish the first attempt at once (the dispatcher covers a failed publish)."""
    svc = services()
    session = db()
    session.commit()
    try:
        claims = webhooks.claim_due(
            session, webhooks.claim_lease(svc.settings), delivery_id=delivery.id
        )
        session.commit()
        for delivery_id, token in webhooks.publish(svc.publisher, claims):
            webhooks.release_claim(session, delivery_id, token)
        session.commit()
    except Exception:
        session.rollback()
        log.warning("redelivery left to the dispatcher", extra={"delivery_id": delivery.id})
    session.refresh(delivery)
    return model_response(DeliveryBody, webhooks.delivery_view(delivery), 202)


@bp.get("/v1/webhooks/deliveries")
@client_key(None)
def my_deliveries() -> ResponseReturnValue:
    return _page(current_key().id)


@bp.get("/v1/webhooks/deliveries/<delivery_id>")
@client_key(None)
def my_delivery(delivery_id: str) -> ResponseReturnValue:
    delivery = webhooks.owned_delivery(db(), current_key(), delivery_id)
    return model_response(DeliveryBody, webhooks.delivery_view(delivery, with_attempts=True))


@bp.post("/v1/webhooks/deliveries/<delivery_id>/redeliver")
@client_key(None)
def redeliver(delivery_id: str) -> ResponseReturnValue:
    return _send_now(webhooks.redeliver(db(), current_key(), delivery_id))


@bp.post("/v1/jobs/<request_id>/redeliver")
@client_key("jobs")
def redeliver_job(request_id: str) -> ResponseReturnValue:
    session = db()
    key = current_key()
    return _send_now(webhooks.redeliver_job(session, key, get_owned_job(session, key, request_id)))


@bp.get("/admin/webhooks/deliveries")
@admin_only
def all_deliveries() -> ResponseReturnValue:
    return _page(request.args.get("api_id") or None)


@bp.get("/admin/webhooks/deliveries/<delivery_id>")
@admin_only
def any_delivery(delivery_id: str) -> ResponseReturnValue:
    delivery = db().get(WebhookDelivery, delivery_id)
    if delivery is None:
        raise ApiError("NOT_FOUND", f"no webhook delivery {delivery_id[:64]!r}")
    return model_response(DeliveryBody, webhooks.delivery_view(delivery, with_attempts=True))
