"""Flask app factory: settings in, app out; one error handler speaks the seed's error body."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
import traceback
from collections.abc import Iterable, Iterator
from typing import Any

import redis
from flask import Flask, Response, g, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from antihack.api import (
    admin,
    admin_ui,
    capture_sessions,
    demo,
    jobs,
    landing,
    metrics,
    openapi,
    ops,
    sdk,
    usage,
    webhooks,
)
from antihack.api.context import Services
from antihack.shared.domain.errors import ApiError
from antihack.shared.domain.keys import KeyCache
from antihack.shared.domain.ratelimit import RateLimiter
from antihack.shared.infra.db import DB_POOL_SIZE, make_engine, make_sessionmaker, on_psycopg
from antihack.shared.infra.publisher import TaskPublisher
from antihack.shared.infra.runtime import prepare
from antihack.shared.infra.secrets import new_request_id
from antihack.shared.infra.settings import Settings

log = logging.getLogger(__name__)

# Blueprints whose requests carry ids, names or tokens to the database.
DATABASE_BLUEPRINTS = frozenset({"jobs", "admin", "usage", "webhooks", "capture_sessions"})
# Multipart fields besides the file: a few short strings.
FORM_OVERHEAD_BYTES = 64 * 1024


def create_app(settings: Settings | None = None, threads: int = 0) -> Flask:
    """The API's Flask app; ``threads``: how many threads serve it (gunicorn's ``--threads``),
    so that the database pool keeps a connection for each instead of opening one per request."""
    settings = prepare(settings or Settings.from_env())
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes + FORM_OVERHEAD_BYTES
    # Applies to text fields (and parser buffers), not to file parts.
    app.config["MAX_FORM_MEMORY_SIZE"] = 1024 * 1024
    app.config["MAX_FORM_PARTS"] = 20
    app.json.sort_keys = False  # type: ignore[attr-defined]
    client = redis.Redis.from_url(
        settings.redis_client_url, socket_timeout=settings.sync_wait_s + 5
    )
    engine = make_engine(settings.effective_database_url, pool_size=max(DB_POOL_SIZE, threads))
    app.extensions["antihack"] = Services(
        settings=settings,
        sessions=make_sessionmaker(engine),
        intake=(
            engine.execution_options(isolation_level="AUTOCOMMIT") if on_psycopg(engine) else None
        ),
        redis=client,
        publisher=TaskPublisher(settings),
        limiter=RateLimiter(
            redis.Redis.from_url(
                settings.redis_client_url, socket_timeout=2, socket_connect_timeout=2
            ),
            fail_open=settings.rate_limit_fail_open,
        ),
        keys=KeyCache(settings.key_cache_s),
        download_slots=(
            threading.BoundedSemaphore(settings.max_concurrent_downloads)
            if settings.max_concurrent_downloads > 0
            else None
        ),
    )
    app.register_blueprint(jobs.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(admin_ui.bp)
    app.register_blueprint(ops.bp)
    app.register_blueprint(usage.bp)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(capture_sessions.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(sdk.bp)
    app.register_blueprint(demo.bp)
    app.register_blueprint(landing.bp)
    metrics.instrument(app)
    _register_errors(app)
    if settings.upload_timeout_s > 0:
        app.wsgi_app = UploadDeadline.middleware(  # type: ignore[method-assign]
            app.wsgi_app, settings.upload_timeout_s
        )

    @app.before_request
    def _request_id() -> None:
        g.request_id = new_request_id()

    @app.before_request
    def _refuse_nul() -> None:
        # Ids, names and tokens go to the database, and PostgreSQL refuses NUL in text (a
        # DataError, so a 500): no value with one can be valid, so refuse it up front.
        if request.blueprint not in DATABASE_BLUEPRINTS:
            return
        values = [request.path, *request.headers.values()]
        values += [part for item in request.args.items(multi=True) for part in item]
        if any("\x00" in value for value in values):
            raise ApiError("INVALID_ARGUMENT", "NUL characters in the path, query or headers")

    @app.after_request
    def _rate_limit_headers(response: Response) -> Response:
        decision = g.get("rate_limit")
        if decision is not None:
            response.headers.extend(decision.headers())
        return response

    @app.teardown_request
    def _close_session(_exc: BaseException | None) -> None:
        session = g.pop("db", None)
        if session is not None:
            session.close()

    return app


def error_response(status: str, reason: str, code: int) -> tuple[Response, int]:
    body = {
        "status": status,
        "reason": reason,
        "request_id": g.get("request_id") or new_request_id(),
    }
    return jsonify(body), code


def _register_errors(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> ResponseReturnValue:
        body, code = error_response(exc.status, exc.reason, exc.http_code)
        return body, code, exc.headers

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> ResponseReturnValue:
        code = exc.code or 500
        if code == 404:
            return error_response("NOT_FOUND", f"the request path {request.path} is not found", 404)
        if code == 405:
            return error_response(
                "NOT_FOUND", f"{request.method} is not supported on {request.path}", 405
            )
        if code == 413:
            return _too_large(app, exc)
        if code >= 500:
            return error_response("INTERNAL_ERROR", "server processes failed", code)
        return error_response("INVALID_ARGUMENT", exc.description or exc.name, code)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> ResponseReturnValue:
        log.exception("unhandled error", extra={"request_id": g.get("request_id")})
        return error_response("INTERNAL_ERROR", "server processes failed", 500)


def _too_large(app: Flask, exc: HTTPException) -> tuple[Response, int]:
    """werkzeug raises the same 413 for three limits; say which one the request broke.

    Only a body over MAX_CONTENT_LENGTH or a text field over MAX_FORM_MEMORY_SIZE is a size
    problem (413); too many form parts is a malformed request (400), whatever its size.
    """
    frames = list(traceback.walk_tb(exc.__traceback__))
    where = frames[-1][0].f_code.co_name if frames else ""
    if where == "next_event":  # werkzeug.sansio.multipart: the part count
        parts = app.config["MAX_FORM_PARTS"]
        return error_response(
            "INVALID_ARGUMENT",
            f"the multipart body has more than {parts} parts; the limit is {parts} "
            "(send only the documented fields)",
            400,
        )
    if where in ("receive_data", "parse"):  # a text field, in the decoder or the parser
        limit = app.config["MAX_FORM_MEMORY_SIZE"]
        return error_response(
            "INVALID_ARGUMENT", f"a text field of the form is larger than {limit} bytes", 413
        )
    limit = app.config["MAX_CONTENT_LENGTH"]
    return error_response("INVALID_ARGUMENT", f"request body larger than {limit} bytes", 413)


class UploadDeadline:
    """``wsgi.input`` whose whole body must arrive by a deadline (ANTIHACK_UPLOAD_TIMEOUT_S).

    gunicorn's gthread workers read a request body with a blocking socket in one of a few
    threads; a client that trickles its body, or stops half-way, would hold that thread
    forever, and a few dozen such clients stop the API. Before every read the socket's timeout
    is set to the time left, so the read fails when the deadline passes; werkzeug turns that
    into ClientDisconnected, a 400 INVALID_ARGUMENT. The socket's read side is then shut, so
    gunicorn does not wait on the rest of the body before it closes the connection.
    """

    def __init__(self, stream: Any, sock: socket.socket, deadline: float) -> None:
        self._stream = stream
        self._sock = sock
        self._deadline = deadline

    @classmethod
    def middleware(cls, wsgi_app: Any, seconds: float) -> Any:
        def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            sock = environ.get("gunicorn.socket")
            if not isinstance(sock, socket.socket):
                return wsgi_app(environ, start_response)  # type: ignore[no-any-return]
            environ["wsgi.input"] = cls(environ["wsgi.input"], sock, time.monotonic() + seconds)
            try:
                return wsgi_app(environ, start_response)  # type: ignore[no-any-return]
            finally:
                sock.settimeout(None)  # blocking again for writing the answer

        return app

    def _call(self, method: str, size: int | None) -> bytes:
        remaining = self._deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise TimeoutError("the request body did not arrive in time")
            self._sock.settimeout(remaining)
            data: bytes = getattr(self._stream, method)(size)
            return data
        except TimeoutError:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RD)
            raise

    def read(self, size: int | None = None) -> bytes:
        return self._call("read", size)

    def readline(self, size: int | None = None) -> bytes:
        return self._call("readline", size)

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line
