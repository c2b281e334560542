"""Reading a submission from a multipart request: exactly one source, flags, optional callback."""

from __future__ import annotations

import math
from collections.abc import Mapping

from flask import request
from sqlalchemy.orm import Session

from antihack.api.context import services
from antihack.api.form import read_form
from antihack.shared.domain.capture import CaptureError, capture_from_image, parse_capture
from antihack.shared.domain.capture_sessions import CaptureFacts
from antihack.shared.domain.errors import ApiError
from antihack.shared.domain.jobs import Submission, capture_limits
from antihack.shared.infra.settings import Settings
from antihack.shared.infra.tables import ApiKey, Image, utcnow
from antihack.shared.infra.urlguard import UrlRefused, fetch, resolve

SOURCES = ("liveness_data_file", "liveness_data_url", "image_id")
MAX_IDEMPOTENCY_KEY = 255


class DownloadsBusy(ApiError):
    """Every download slot of this API process is taken (ANTIHACK_MAX_CONCURRENT_DOWNLOADS).

    RATE_LIMIT_EXCEEDED, not DOWNLOAD_ERROR: the URL is not at fault and the same request will
    succeed later, which is what clients already do on RATE_LIMIT_EXCEEDED with Retry-After.
    """

    def __init__(self, slots: int, retry_after_s: int) -> None:
        super().__init__(
            "RATE_LIMIT_EXCEEDED",
            f"the service is already downloading {slots} liveness_data_url files at once; "
            f"retry in {retry_after_s} s, or upload the file as liveness_data_file",
            headers={"Retry-After": str(retry_after_s)},
        )


def _download(url: str, settings: Settings) -> bytes:
    """Fetch ``liveness_data_url`` in one of the process's download slots."""
    semaphore = services().download_slots
    if semaphore is not None and not semaphore.acquire(blocking=False):
        raise DownloadsBusy(
            settings.max_concurrent_downloads, max(1, math.ceil(settings.download_timeout_s))
        )
    try:
        return fetch(
            url,
            allow_private=settings.allow_private_urls,
            timeout=settings.download_timeout_s,
            max_bytes=settings.max_upload_bytes,
        )
    except UrlRefused as exc:
        raise ApiError("DOWNLOAD_ERROR", f"liveness_data_url: {exc.reason}") from None
    finally:
        if semaphore is not None:
            semaphore.release()


def _flag(form: Mapping[str, str], name: str) -> bool:
    raw = form.get(name)
    if raw is None or raw == "":
        return False
    if raw not in ("0", "1"):
        raise ApiError("INVALID_ARGUMENT", f"{name} must be 0 or 1, got {raw[:20]!r}")
    return raw == "1"


def _idempotency_key() -> str | None:
    value = request.headers.get("Idempotency-Key")
    if value is None:
        return None
    value = value.strip(" \t")  # optional white space around a header value, not CR/LF
    if not value or len(value) > MAX_IDEMPOTENCY_KEY or not value.isprintable():
        raise ApiError(
            "INVALID_ARGUMENT",
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable characters",
        )
    return value


def read_submission(session: Session, key: ApiKey, settings: Settings) -> Submission:
    """Validate the request and load its payload; every problem is a seed error, not a job."""
    if request.mimetype != "multipart/form-data":
        raise ApiError("INVALID_ARGUMENT", "the request body must be multipart/form-data")
    form, files = read_form(request)
    upload = files.get("liveness_data_file")
    url = form.get("liveness_data_url", "").strip()
    image_id = form.get("image_id", "").strip()
    given = [name for name, v in zip(SOURCES, (upload, url, image_id), strict=True) if v]
    if not given:
        raise ApiError(
            "INVALID_ARGUMENT",
            "must specify liveness_data_file' argument (or liveness_data_url, or image_id)",
        )
    if len(given) > 1:
        raise ApiError("INVALID_ARGUMENT", f"give exactly one of {', '.join(SOURCES)}, got {given}")
    return_image, return_extra = _flag(form, "return_image"), _flag(form, "return_extra")
    idem = _idempotency_key()
    callback_url = form.get("callback_url", "").strip() or None
    if callback_url:
        try:
            resolve(callback_url, allow_private=settings.allow_private_urls)
        except UrlRefused as exc:
            raise ApiError("INVALID_ARGUMENT", f"callback_url refused: {exc.reason}") from None

    limits = capture_limits(settings)
    if upload is not None:
        source = "file"
        payload = upload.stream.read(settings.max_upload_bytes + 1)
        if len(payload) > settings.max_upload_bytes:
            raise ApiError(
                "INVALID_ARGUMENT", f"file larger than {settings.max_upload_bytes} bytes", 413
            )
    elif url:
        source = "url"
        payload = _download(url, settings)
    else:
        source = "image"
        image = session.get(Image, image_id) if image_id.isprintable() else None
        if image is None or image.api_key_id != key.id or image.expires_at <= utcnow():
            raise ApiError("INVALID_ARGUMENT", f"unknown or expired image_id {image_id[:64]!r}")
        try:
            payload = capture_from_image(image.payload, limits).SerializeToString()
        except CaptureError as exc:
            raise ApiError(exc.status, exc.reason) from None
    if not payload:
        raise ApiError("INVALID_ARGUMENT", f"{given[0]} is empty")
    try:
        capture = parse_capture(payload, limits)
    except CaptureError as exc:
        raise ApiError(exc.status, f"{given[0]}: {exc.reason}") from None
    return Submission(
        capture=CaptureFacts.of(capture),
        payload=payload,
        source=source,
        return_image=return_image,
        return_extra=return_extra,
        callback_url=callback_url,
        idempotency_key=idem,
    )
