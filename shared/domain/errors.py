"""The project exception carrying a seed status; one handler turns it into the seed's body."""

from __future__ import annotations

HTTP_CODES = {
    "INVALID_ARGUMENT": 400,
    "DETETION_FAILED": 400,  # the seed's spelling
    "DOWNLOAD_ERROR": 400,
    "UNAUTHORIZED": 401,
    "KEY_EXPIRED": 401,
    "NO_PERMISSION": 403,
    "OUT_OF_QUOTA": 403,
    "RATE_LIMIT_EXCEEDED": 403,
    "NOT_FOUND": 404,
    "INTERNAL_ERROR": 500,
}


class ApiError(Exception):
    """An error the client sees as ``{"status", "reason", "request_id"}``."""

    def __init__(
        self,
        status: str,
        reason: str,
        http_code: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason
        self.http_code = http_code or HTTP_CODES.get(status, 400)
        # Response headers that belong to this answer (e.g. Retry-After of a busy download slot).
        self.headers = headers or {}
