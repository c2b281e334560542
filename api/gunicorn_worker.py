"""The API's gunicorn worker: gunicorn's own error answers in the seed's JSON error body.

gunicorn refuses some requests before Flask sees them (a request line over
``limit_request_line``: 414; a header over ``limit_request_field_size`` or too many headers:
431; a malformed request line, method or header: 400) and answers with an HTML page written by
``gunicorn.util.write_error``. Every gunicorn version calls that one function, from
``Worker.handle_error`` only, with the status and message it chose; this worker swaps it for
one that writes the documented ``{"status", "reason", "request_id"}`` body instead, keeping
gunicorn's choice of status and its limits.
"""

from __future__ import annotations

import json
from typing import Any

import gunicorn.util
from gunicorn.workers.gthread import ThreadWorker

from antihack.shared.domain.jobs import error_body
from antihack.shared.infra.secrets import new_request_id

# gunicorn's status -> the seed's status string (codes it never writes fall back by class).
SEED_STATUS = {403: "NO_PERMISSION", 500: "INTERNAL_ERROR"}


def gunicorn_error_body(status_int: int, reason: str, mesg: str, limits: dict[int, str]) -> bytes:
    """The seed's error body for one of gunicorn's answers: ``limits`` explains 414/431."""
    status = SEED_STATUS.get(status_int, "INVALID_ARGUMENT")
    if status == "INTERNAL_ERROR":
        text = "server processes failed"
    else:
        text = limits.get(status_int, reason) + (f" ({mesg})" if mesg else "")
    return json.dumps(error_body(new_request_id(), status, text)).encode()


class JsonErrorWorker(ThreadWorker):  # type: ignore[misc]
    """gunicorn's gthread worker whose refusals are the seed's JSON errors."""

    def init_process(self) -> None:
        cfg = self.cfg
        limits = {
            414: f"the request line (method, path and query) is longer than "
            f"{cfg.limit_request_line} bytes",
            431: f"the request headers are too large: at most {cfg.limit_request_fields} "
            f"headers of at most {cfg.limit_request_field_size} bytes each",
        }

        def write_json_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
            body = gunicorn_error_body(status_int, reason, mesg, limits)
            head = (
                f"HTTP/1.1 {status_int} {reason}\r\n"
                "Connection: close\r\n"
                "Content-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            )
            gunicorn.util.write_nonblock(sock, head.encode("latin-1") + body)

        # In this worker process only (it runs after the fork); see the module docstring.
        gunicorn.util.write_error = write_json_error
        super().init_process()
