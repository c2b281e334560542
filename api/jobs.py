"""Client endpoints: the seed's synchronous path, jobs with polling, H5 image upload; the
submit and read endpoints also take a capture session's upload token, with CORS."""

from __future__ import annotations

import contextlib
import logging
import time
from datetime import timedelta

import redis
from flask import Blueprint, Response, g, request, url_for
from flask.typing import ResponseReturnValue

from antihack.api.app_helpers import json_response, model_response
from antihack.api.auth import client_key, current_key, current_upload
from antihack.api.context import db, services
from antihack.api.submission import read_submission
from antihack.shared.domain import schemas
from antihack.shared.domain.capture import CaptureError, capture_from_image
from antihack.shared.domain.errors import HTTP_CODES, ApiError
from antihack.shared.domain.jobs import (
    Accepted,
    accept_in_one_statement,
    accept_job,
    capture_limits,
    commit_accepted,
    get_owned_job,
    job_resource,
    takes_one_statement,
)
from antihack.shared.domain.retention import delete_owned_job
from antihack.shared.infra.db import retry_on_disconnect, transaction
from antihack.shared.infra.queues import ANALYZE_QUEUE, ANALYZE_TASK, done_key
from antihack.shared.infra.secrets import new_request_id
from antihack.shared.infra.tables import FINAL_STATES, Image, Job, utcnow

log = logging.getLogger(__name__)
bp = Blueprint("jobs", __name__)

# The endpoints a browser calls with an upload token, and their methods. Bearer tokens and no
# cookies: any origin may call them, since a page can only use a token it was given.
CORS_ENDPOINTS = {
    "jobs.liveness_anti_hack": "POST",
    "jobs.submit_job": "POST",
    "jobs.get_job": "GET",
}
CORS_ALLOW_HEADERS = "Authorization, Content-Type, Prefer, Idempotency-Key"
CORS_EXPOSE_HEADERS = "Location, Retry-After, RateLimit, RateLimit-Policy"
CORS_MAX_AGE_S = 600


@bp.after_request
def _cors(response: Response) -> Response:
    """CORS on the token-usable endpoints: errors too, so a page can read their reason."""
    methods = CORS_ENDPOINTS.get(request.endpoint or "")
    if methods is None:
        return response
    response.headers["Access-Control-Allow-Origin"] = "*"
    if request.method == "OPTIONS":  # a preflight, answered by Flask's automatic OPTIONS
        response.headers["Access-Control-Allow-Methods"] = methods
        response.headers["Access-Control-Allow-Headers"] = CORS_ALLOW_HEADERS
        response.headers["Access-Control-Max-Age"] = str(CORS_MAX_AGE_S)
        response.status_code = 204
        response.set_data(b"")
    else:
        response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE_HEADERS
    return response


def _submit() -> Accepted:
    """Validate, commit the job, then publish its id (the sweeper covers a failed publish).

    One transaction: the job, its input, the session redemption and the quota charge; on
    PostgreSQL a submission with nothing to look up or redeem is one statement.
    """
    svc = services()
    session = db()
    key = current_key()
    if session.in_transaction():
        # End the authentication read (an upload token's) before slow work (a download), so
        # that no transaction stays open; a key from the key cache read nothing.
        session.commit()
    sub = read_submission(session, key, svc.settings)
    upload = current_upload()
    if upload is not None and not upload.nonce_matches(sub.capture.nonce):
        # Refused before anything is spent: the token stays usable for its own capture.
        raise ApiError(
            "NO_PERMISSION",
            "this upload token submits only a capture whose session_nonce is its session's nonce",
        )
    if svc.intake is not None and takes_one_statement(key, sub, upload):
        job = accept_in_one_statement(svc.intake, key, sub)
    else:
        job = retry_on_disconnect(
            session, lambda: accept_job(session, key, sub, upload, defer_charge=True)
        )
        commit_accepted(session, key, job)  # the quota charge travels with the COMMIT
    g.request_id = job.id
    if job.created:
        try:
            svc.publisher.send_task(ANALYZE_TASK, args=(job.id,), queue=ANALYZE_QUEUE)
        except Exception:
            log.warning("publish failed; the sweeper will enqueue it", extra={"request_id": job.id})
    return job


def _accepted(job: Accepted, **headers: str) -> ResponseReturnValue:
    url = url_for("jobs.get_job", request_id=job.id, _external=True)
    body = {"request_id": job.id, "status": job.status, "job_url": url}
    return model_response(schemas.Accepted, body, 202, Location=url, **headers)


def _wait_final(job_id: str, timeout: float) -> Job | None:
    """Wait for the job to end, woken by the worker's Redis push; poll the database as backup."""
    svc = services()
    deadline = time.monotonic() + timeout
    while True:
        with transaction(svc.sessions) as session:
            job = session.get(Job, job_id)
            if job is not None and job.status in FINAL_STATES:
                _ = job.result  # load before the session closes
                return job
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        try:
            svc.redis.blpop([done_key(job_id)], timeout=max(0.05, min(remaining, 1.0)))
        except redis.RedisError:
            time.sleep(min(remaining, 0.25))


@bp.post("/face/liveness_anti_hack")
@client_key("liveness_anti_hack", upload_token=True, cached=True)
def liveness_anti_hack() -> ResponseReturnValue:
    """The seed endpoint: waits for the result, or answers 202 when asked or when it is slow."""
    job = _submit()
    if "respond-async" in request.headers.get("Prefer", "").lower():
        return _accepted(job, **{"Preference-Applied": "respond-async"})
    done = _wait_final(job.id, services().settings.sync_wait_s)
    if done is None or done.result is None:
        return _accepted(job)
    body = schemas.job_result(done.result.body)
    code = 200 if body["status"] == "OK" else HTTP_CODES.get(body["status"], 500)
    return json_response(body, code)


@bp.post("/v1/jobs")
@client_key("jobs", upload_token=True, cached=True)
def submit_job() -> ResponseReturnValue:
    return _accepted(_submit())


@bp.get("/v1/jobs/<request_id>")
@client_key("jobs", upload_token=True, cached=True)
def get_job(request_id: str) -> ResponseReturnValue:
    upload = current_upload()
    if upload is not None and request_id != upload.job_id:
        # An upload token reads only the job it created; any other is "not found".
        raise ApiError("NOT_FOUND", f"no job {request_id!r} for this API key")
    job = get_owned_job(db(), current_key(), request_id)
    url = url_for("jobs.get_job", request_id=job.id, _external=True)
    return model_response(schemas.Job, job_resource(job, url))


@bp.delete("/v1/jobs/<request_id>")
@client_key("jobs")
def delete_job(request_id: str) -> ResponseReturnValue:
    """Remove a job and every trace of it now: input, result (with its best-frame image),
    replay fingerprints, webhook deliveries and attempts, its capture session. A RUNNING job
    is refused (409); the quota it was charged is not given back."""
    session = db()
    deleted = delete_owned_job(session, current_key().id, request_id)
    session.commit()
    with contextlib.suppress(redis.RedisError):  # the completion signal: gone in 2 min anyway
        services().redis.delete(done_key(request_id))
    log.info("job deleted", extra={"request_id": request_id, "deleted": dict(deleted)})
    return model_response(schemas.JobInputDeleted, {"request_id": request_id, "status": "OK"})


@bp.post("/face/liveness_image")
@client_key("liveness_image")
def upload_image() -> ResponseReturnValue:
    """H5 flow: keep one image for a while and answer its ``image_id``."""
    svc = services()
    session = db()
    key = current_key()
    session.commit()
    if request.mimetype != "multipart/form-data":
        raise ApiError("INVALID_ARGUMENT", "the request body must be multipart/form-data")
    upload = request.files.get("image")
    if upload is None:
        raise ApiError("INVALID_ARGUMENT", "must specify 'image' argument")
    data = upload.stream.read(svc.settings.max_upload_bytes + 1)
    if not data:
        raise ApiError("INVALID_ARGUMENT", "image is empty")
    try:
        capture_from_image(data, capture_limits(svc.settings))
    except CaptureError as exc:
        raise ApiError(exc.status, f"image: {exc.reason}") from None
    now = utcnow()
    image = Image(
        id="IMG" + new_request_id()[3:],
        api_key_id=key.id,
        payload=data,
        created_at=now,
        expires_at=now + timedelta(seconds=svc.settings.image_ttl_s),
    )
    session.add(image)
    session.commit()
    return model_response(
        schemas.ImageUploaded,
        {
            "request_id": g.request_id,
            "status": "OK",
            "image_id": image.id,
            "expires_at": image.expires_at,
        },
    )
