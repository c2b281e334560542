"""Abuse: the API fuzzed from its own OpenAPI document (schemathesis), random multipart bodies
(hypothesis), hostile images and captures, a slow upload to the real gunicorn, header
injection, path traversal, secrets in logs and at rest, constant-time comparisons.

Every fuzzing run is bounded (a fixed number of examples, derandomized) so that CI is
deterministic and quick."""

from __future__ import annotations

import functools
import hmac
import inspect
import io
import json
import os
import re
import secrets
import socket
import string
import struct
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import cv2
import numpy as np
import pytest
import requests
import schemathesis
import sqlalchemy as sa
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import func, select
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from antihack.api import admin_ui
from antihack.api.auth import admin_only
from antihack.api.metrics import _check_token as metrics_check_token
from antihack.api.openapi import document
from antihack.shared.domain.capture import verify_signature
from antihack.shared.domain.errors import HTTP_CODES
from antihack.shared.domain.keys import KeyOptions, create_key
from antihack.shared.infra.db import transaction
from antihack.shared.infra.secrets import check_secret, hash_secret
from antihack.shared.infra.settings import MiB, Settings
from antihack.shared.infra.tables import ApiKey, Image
from antihack.shared.proto import liveness_pb2 as pb
from tests.conftest import Key, create_test_app
from tests.devstack import ROOT, start_api, wait_until
from tests.helpers import job_count, no_face_capture, png_bytes, png_with_header, small_coffee

ADMIN_TOKEN = "test-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

# --- 1. the OpenAPI document against the app (schemathesis) -----------------------------------

EXAMPLES_PER_OPERATION = 25
# The fuzzing key's credentials are fixed so that schemathesis itself sends them: it then knows
# which requests are authenticated, and its negative cases (a missing credential) stay negative.
FUZZ_API_ID = "ak_schemathesis"
FUZZ_API_SECRET = "schemathesis-api-secret-0123456789abcdef"
ST_CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 20261126,
        "generation": {
            "max-examples": EXAMPLES_PER_OPERATION,
            "deterministic": True,
            "database": "none",
            "mode": "all",  # valid inputs and inputs that break the document
            # Unknown query parameters are ignored, as HTTP APIs commonly do.
            "allow-extra-parameters": True,
            "allow-x00": True,  # NUL in strings: PostgreSQL refuses it in text
        },
        "auth": {
            "openapi": {
                "ApiId": {"api_key": FUZZ_API_ID},
                "ApiSecret": {"api_key": FUZZ_API_SECRET},
                "AdminToken": {"bearer": ADMIN_TOKEN},
            }
        },
    }
)
SCHEMA = schemathesis.openapi.from_dict(document(), config=ST_CONFIG)
URL_FIELDS = ("liveness_data_url", "callback_url", "webhook_url")


@SCHEMA.hook
def map_body(_context: Any, body: Any) -> Any:
    """Point generated URLs at a host that cannot exist (RFC 2606 ``.invalid``): the service
    still parses, checks and resolves them, but a fuzzing run never reaches a real server."""
    if not isinstance(body, dict):
        return body
    for name in URL_FIELDS:
        value = body.get(name)
        if not isinstance(value, str):
            continue
        try:
            host = urlsplit(value).hostname
        except ValueError:
            continue
        if host:
            body[name] = re.sub(re.escape(host), "fuzz.invalid", value, count=1, flags=re.I)
    return body


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@pytest.fixture(scope="module")
def fuzz_app(base_settings: Settings, sessions: Any) -> Flask:
    # Public addresses only (as in production), a short sync wait (no worker runs here), and
    # a key of its own with the fixed credentials above.
    settings_ = base_settings.replace(
        allow_private_urls=False, sync_wait_s=0.2, download_timeout_s=1
    )
    with transaction(sessions) as s:
        if s.get(ApiKey, FUZZ_API_ID) is None:
            key, _ = create_key(
                s, settings_.secret_key, KeyOptions(name="schemathesis"), api_id=FUZZ_API_ID
            )
            key.secret_hash = hash_secret(settings_.secret_key, FUZZ_API_SECRET)
    return create_test_app(settings_)


@SCHEMA.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_the_app_conforms_to_its_openapi_document(case: Any, fuzz_app: Flask) -> None:
    checks = CHECKS
    if case.operation.path == "/readyz":
        # No worker runs here: 503 NOT_READY is this probe's documented answer, not a fault.
        checks = [c for c in CHECKS if c is not not_a_server_error]
    case.call_and_validate(app=fuzz_app, checks=checks)


# --- helpers ----------------------------------------------------------------------------------

SEED = "/face/liveness_anti_hack"
SUBMIT_PATHS = (SEED, "/v1/jobs", "/face/liveness_image")
ERROR_KEYS = {"status", "reason", "request_id"}


def assert_seed_error(resp: Any, codes: tuple[int, ...] = (400,), status: str = "") -> None:
    """An error in the seed's body: its exact keys, a known status, a TID request id."""
    assert resp.status_code in codes, (resp.status_code, resp.get_data(as_text=True)[:300])
    body = resp.get_json()
    assert isinstance(body, dict) and set(body) == ERROR_KEYS, body
    assert body["status"] in HTTP_CODES and body["status"] != "INTERNAL_ERROR", body
    assert re.fullmatch(r"TID[0-9a-f]{32}", body["request_id"]), body
    if status:
        assert body["status"] == status, body


def images_of(sessions: Any, api_id: str) -> int:
    with transaction(sessions) as s:
        return int(
            s.scalar(select(func.count()).select_from(Image).where(Image.api_key_id == api_id)) or 0
        )


def traced(call: Callable[[], Any]) -> tuple[Any, int, float]:
    """Run ``call`` under tracemalloc: (its result, the peak bytes it allocated, seconds)."""
    tracemalloc.start()
    started = time.monotonic()
    try:
        result = call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak, time.monotonic() - started


# --- 2. random multipart bodies through the test client (hypothesis) --------------------------

# RFC 2046 boundary characters that need no quoting in the Content-Type parameter; the rest of
# them must be quoted, and the odd ones are not allowed at all.
BOUNDARY_CHARS = string.ascii_letters + string.digits + "'+_-."
QUOTED_BOUNDARY_CHARS = BOUNDARY_CHARS + "()+,/:=? "
ODD_BOUNDARY_CHARS = QUOTED_BOUNDARY_CHARS + '"\\;\r\n\x00é'
FIELD_NAMES = (
    "liveness_data_file",
    "liveness_data_url",
    "image_id",
    "return_image",
    "return_extra",
    "callback_url",
    "image",
)
FILENAMES = ("capture.pb", "../../etc/passwd", "..\\..\\boot.ini", "a\r\nb", "\x00", "é.png")
FLAG_VALUES = (b"0", b"1", b"2", b"", b"yes", b"-1")


def _rarely(draw: st.DrawFn, one_in: int) -> bool:
    # Hypothesis favours its simplest choice (the first): make that the ordinary case.
    return draw(st.sampled_from([False] * (one_in - 1) + [True]))


@st.composite
def multipart_requests(draw: st.DrawFn) -> tuple[str, bytes, str]:
    """(content type, body, path): mostly well-formed multipart with the service's own fields
    and random values, sometimes broken in one way or another."""
    quoted = _rarely(draw, 4)
    if _rarely(draw, 8):
        boundary = draw(st.text(ODD_BOUNDARY_CHARS, max_size=80))
    elif quoted:
        boundary = draw(st.text(QUOTED_BOUNDARY_CHARS, min_size=1, max_size=70))
    else:
        boundary = draw(st.text(BOUNDARY_CHARS, min_size=1, max_size=70))
    b = boundary.encode("utf-8", "surrogateescape")
    path = draw(st.sampled_from(SUBMIT_PATHS))
    source = "image" if path == "/face/liveness_image" else "liveness_data_file"
    names = [source, *draw(st.lists(st.sampled_from(FIELD_NAMES), max_size=5))]
    if _rarely(draw, 6):
        names = draw(st.permutations(names))
    body = b""
    for name in names:
        if _rarely(draw, 8):
            name = draw(st.text(max_size=20))
        disposition = f'form-data; name="{name}"'
        is_file = name in ("liveness_data_file", "image") and not _rarely(draw, 5)
        if is_file or _rarely(draw, 5):
            # An empty filename is a browser's "no file chosen": the field counts as absent.
            filename = "" if _rarely(draw, 10) else draw(st.sampled_from(FILENAMES))
            disposition += f'; filename="{filename}"'
        headers = [f"Content-Disposition: {disposition}"]
        if _rarely(draw, 3):
            headers.append(
                "Content-Type: "
                + draw(st.sampled_from(["application/octet-stream", "image/png", "text/plain"]))
            )
        if _rarely(draw, 6):
            headers.append(draw(st.text(max_size=40)))  # a header line of noise
        if name.startswith("return_") and not _rarely(draw, 4):
            value = draw(st.sampled_from(FLAG_VALUES))
        else:
            value = draw(st.binary(max_size=3000))
        part = "\r\n".join(headers).encode("utf-8", "surrogateescape") + b"\r\n\r\n" + value
        body += b"--" + b + b"\r\n" + part + b"\r\n"
    body += b"--" + b + b"--\r\n"
    if _rarely(draw, 8):  # cut anywhere, or a broken closing line
        body = body[: len(body) - draw(st.integers(1, max(1, len(body))))]
    if _rarely(draw, 10):
        body = draw(st.binary(max_size=3000))  # no structure at all
    content_type = f"multipart/form-data; boundary={boundary}"
    if quoted:
        content_type = f'multipart/form-data; boundary="{boundary}"'
    if _rarely(draw, 5):
        content_type = draw(
            st.sampled_from(
                [
                    "multipart/form-data",
                    f"multipart/form-data; boundary={boundary}; charset=utf-16",
                    f"multipart/mixed; boundary={boundary}",
                    "application/octet-stream",
                    "application/x-www-form-urlencoded",
                    "",
                ]
            )
        )
    return content_type, body, path


@pytest.fixture(scope="module")
def fuzz_key(base_settings: Settings, sessions: Any) -> Key:
    with transaction(sessions) as s:
        key, new = create_key(s, base_settings.secret_key, KeyOptions(name="multipart-fuzz"))
        return Key(key.id, new.api_secret, new.sdk_secret, new.webhook_secret)


@pytest.fixture(scope="module")
def module_app(base_settings: Settings) -> Flask:
    return create_test_app(base_settings.replace(sync_wait_s=0.2))


@settings(
    max_examples=200,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(request=multipart_requests())
def test_random_multipart_bodies_get_a_seed_error_in_bounded_memory(
    request: tuple[str, bytes, str], module_app: Flask, fuzz_key: Key, sessions: Any
) -> None:
    content_type, body, path = request
    client = module_app.test_client()
    headers = {**fuzz_key.headers, "Prefer": "respond-async"}
    # Straight into the WSGI environ: the test client refuses CR/LF in header values, a server
    # in front might not.
    environ = {"CONTENT_TYPE": content_type}
    jobs, images = job_count(sessions, fuzz_key.api_id), images_of(sessions, fuzz_key.api_id)

    resp, peak, _ = traced(
        lambda: client.post(path, data=body, headers=headers, environ_overrides=environ)
    )

    assert_seed_error(resp, (400, 413))
    assert job_count(sessions, fuzz_key.api_id) == jobs
    assert images_of(sessions, fuzz_key.api_id) == images
    # The request, its parsed form and the reply: a few copies of the body plus a fixed cost.
    assert peak < 4 * len(body) + 2 * MiB, (peak, len(body))


@pytest.mark.parametrize(
    ("what", "size", "make"),
    [
        # an 8 MiB file part of random bytes: read once, refused by the capture parser
        ("file", 8 * MiB, lambda n: {"liveness_data_file": (io.BytesIO(os.urandom(n)), "x.pb")}),
        # a text field over MAX_FORM_MEMORY_SIZE (1 MiB): 413 while parsing the form
        ("text", 3 * MiB, lambda n: {"liveness_data_url": "h" * n}),
        # an image part of random bytes for the H5 flow
        ("image", 4 * MiB, lambda n: {"image": (io.BytesIO(os.urandom(n)), "i.png")}),
    ],
)
def test_large_random_parts_are_refused_in_bounded_memory(
    module_app: Flask, fuzz_key: Key, sessions: Any, what: str, size: int, make: Any
) -> None:
    path = "/face/liveness_image" if what == "image" else "/v1/jobs"
    client = module_app.test_client()
    data = make(size)
    resp, peak, seconds = traced(
        lambda: client.post(
            path, data=data, headers=fuzz_key.headers, content_type="multipart/form-data"
        )
    )
    assert_seed_error(resp, (400, 413), "INVALID_ARGUMENT")
    assert peak < 4 * size, (what, peak / MiB)
    assert seconds < 10
    assert job_count(sessions, fuzz_key.api_id) == 0


# --- 3. hostile images and captures ------------------------------------------------------------


@functools.cache
def png_bomb(width: int, height: int) -> bytes:
    """A real, decodable 1-bit grey PNG of zeros: tiny on the wire, ``width × height × 3``
    bytes once decoded to RGB (20000² → 1.2 GB)."""
    row = b"\x00" * (1 + (width + 7) // 8)
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    return png_with_header(width, height, idat, bit_depth=1, colour_type=0)


@functools.cache
def jpeg_claiming(width: int, height: int) -> bytes:
    """A real 64×64 JPEG whose frame header claims ``width × height``."""
    ok, buf = cv2.imencode(".jpg", np.zeros((64, 64, 3), np.uint8))
    assert ok
    data = bytearray(buf.tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def capture_of(*images: bytes, **fields: Any) -> bytes:
    capture = pb.Capture(version=1, session_id=uuid.uuid4().hex, **fields)
    for image in images:
        capture.frames.add(image=image, best=False)
    return capture.SerializeToString()


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _proc_status_kib(field: str) -> int:
    found = re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text())
    assert found is not None
    return int(found[1]) * 1024


def peak_rss_increase(call: Callable[[], Any]) -> tuple[Any, int, float]:
    """Run ``call``: (its result, how far the process's peak RSS rose above its RSS before, s).

    tracemalloc sees only Python's allocator; protobuf (upb) and OpenCV allocate with malloc,
    so the kernel's high-water mark is reset (``/proc/self/clear_refs``) and read instead.
    """
    Path("/proc/self/clear_refs").write_text("5")
    before = _proc_status_kib("VmRSS")
    started = time.monotonic()
    result = call()
    seconds = time.monotonic() - started
    return result, _proc_status_kib("VmHWM") - before, seconds


needs_proc = pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists(), reason="peak RSS needs Linux /proc"
)

SMALL_PNG_32 = functools.cache(lambda: png_bomb(32, 32))

HOSTILE_IMAGES = {
    # 20000 x 20000: 400 Mpx, 1.2 GB as RGB, ~50 KB on the wire
    "png bomb 20000x20000": lambda: png_bomb(20_000, 20_000),
    # within the 8192 px side limit, over the 16.7 Mpx frame limit (64 Mpx)
    "png bomb 8000x8000": lambda: png_bomb(8000, 8000),
    "jpeg claiming 20000x20000": lambda: jpeg_claiming(20_000, 20_000),
    "jpeg claiming 65535x65535": lambda: jpeg_claiming(65_535, 65_535),
}


def captured(make: Callable[[], bytes]) -> Callable[[], bytes]:
    """A capture of the one image ``make`` makes, made when called."""
    return lambda: capture_of(make())


HOSTILE_CAPTURES: dict[str, Callable[[], bytes]] = {
    **{f"capture with a {k}": captured(f) for k, f in HOSTILE_IMAGES.items()},
    # 64 frames of 4096 x 4096 (each at the frame limit): 1.07 Gpx in all, over 100 Mpx
    "64 frames of 4096x4096": lambda: capture_of(*[png_bomb(4096, 4096)] * 64),
    # thousands of frames, each a valid 32 x 32 PNG
    "5000 small frames": lambda: capture_of(*[SMALL_PNG_32()] * 5000),
    # 5 million empty frames in 10 MB: protobuf alone would build ~280 MB of messages
    "5 million empty frames": lambda: b"\x08\x01" + b"\x42\x00" * 5_000_000,
    # one packed repeated field of 10 million challenges
    "10 million packed challenges": lambda: b"\x08\x01\x3a" + _varint(10**7) + b"\x01" * 10**7,
    # 3 million unknown fields (a newer SDK's fields are allowed, not millions of them)
    "3 million unknown fields": lambda: b"\x08\x01" + b"\xa0\x06\x01" * 3_000_000,
}


@needs_proc
@pytest.mark.parametrize("name", list(HOSTILE_IMAGES))
def test_hostile_images_are_refused_from_their_header(
    module_app: Flask, fuzz_key: Key, sessions: Any, name: str
) -> None:
    image = HOSTILE_IMAGES[name]()
    client = module_app.test_client()
    images = images_of(sessions, fuzz_key.api_id)
    resp, grew, seconds = peak_rss_increase(
        lambda: client.post(
            "/face/liveness_image",
            data={"image": (io.BytesIO(image), "i.png")},
            headers=fuzz_key.headers,
            content_type="multipart/form-data",
        )
    )
    assert_seed_error(resp, (400,), "INVALID_ARGUMENT")
    assert "px" in resp.get_json()["reason"]
    assert seconds < 2 and grew < 64 * MiB, (seconds, grew / MiB)
    assert images_of(sessions, fuzz_key.api_id) == images


@needs_proc
@pytest.mark.parametrize("name", list(HOSTILE_CAPTURES))
def test_hostile_captures_are_refused_quickly_in_bounded_memory(
    module_app: Flask, fuzz_key: Key, sessions: Any, name: str
) -> None:
    payload = HOSTILE_CAPTURES[name]()
    assert len(payload) <= 10 * MiB
    client = module_app.test_client()
    resp, grew, seconds = peak_rss_increase(
        lambda: client.post(
            "/v1/jobs",
            data={"liveness_data_file": (io.BytesIO(payload), "c.pb")},
            headers=fuzz_key.headers,
            content_type="multipart/form-data",
        )
    )
    assert_seed_error(resp, (400,), "INVALID_ARGUMENT")
    # The body itself is held a few times (test client, form parser, the read); nothing
    # proportional to what the capture claims.
    assert seconds < 3 and grew < 4 * len(payload) + 64 * MiB, (seconds, grew / MiB)
    assert job_count(sessions, fuzz_key.api_id) == 0


# --- 3b. header injection and path traversal (test client) ------------------------------------

INJECTED = "X-Injected-By-Test"
CRLF_VALUES = (
    f"abc\r\n{INJECTED}: 1",
    f"abc\n{INJECTED}: 1",
    f"abc\r{INJECTED}: 1",
    f"\r\n\r\n<html>{INJECTED}",
)


def assert_not_reflected(resp: Any) -> None:
    for name, value in resp.headers.items():
        assert "\r" not in value and "\n" not in value, (name, value)
        assert INJECTED.lower() not in f"{name}: {value}".lower(), (name, value)


@pytest.mark.parametrize("value", CRLF_VALUES)
def test_crlf_in_headers_and_fields_is_refused_and_never_reflected(
    module_app: Flask, fuzz_key: Key, sessions: Any, value: str
) -> None:
    client = module_app.test_client()
    capture = no_face_capture()

    def submit(**kw: Any) -> Any:
        data = {"liveness_data_file": (io.BytesIO(capture), "c.pb"), **kw.pop("data", {})}
        return client.post("/v1/jobs", data=data, content_type="multipart/form-data", **kw)

    # The WSGI environ takes what a lenient server in front might pass through.
    idem = submit(headers=fuzz_key.headers, environ_overrides={"HTTP_IDEMPOTENCY_KEY": value})
    assert_seed_error(idem, (400,), "INVALID_ARGUMENT")
    assert "Idempotency-Key" in idem.get_json()["reason"]
    api_id = submit(
        headers={"X-DF-API-SECRET": fuzz_key.api_secret},
        environ_overrides={"HTTP_X_DF_API_ID": fuzz_key.api_id + value},
    )
    assert_seed_error(api_id, (401,), "UNAUTHORIZED")
    callback = submit(headers=fuzz_key.headers, data={"callback_url": "http://127.0.0.1/h" + value})
    assert_seed_error(callback, (400,), "INVALID_ARGUMENT")
    assert "callback_url" in callback.get_json()["reason"]
    admin = client.post(
        "/admin/keys",
        json={"name": "x", "webhook_url": "http://127.0.0.1/h" + value},
        headers=ADMIN,
    )
    assert_seed_error(admin, (400,), "INVALID_ARGUMENT")
    for resp in (idem, api_id, callback, admin):
        assert_not_reflected(resp)
    assert job_count(sessions, fuzz_key.api_id) == 0


TRAVERSAL_NAMES = (
    "../../etc/passwd",
    "../../../../../../tmp/{marker}",
    "..\\..\\{marker}",
    "/tmp/{marker}",
    "{marker}/../../{marker}",
    "%2e%2e%2f%2e%2e%2f{marker}",
)


def find_files(marker: str, roots: list[Path]) -> list[Path]:
    found = []
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d not in (".venv", ".git", "node_modules")]
            found += [Path(dirpath) / f for f in filenames + dirnames if marker in f]
    return found


def test_uploaded_file_names_never_reach_the_disk(
    module_app: Flask, fuzz_key: Key, base_settings: Settings, sessions: Any
) -> None:
    """Inputs are kept in the database: no uploaded name becomes a path, inside the data dir or
    anywhere else."""
    marker = f"antihack-traversal-{uuid.uuid4().hex}"
    passwd = Path("/etc/passwd")
    passwd_before = passwd.read_bytes() if passwd.exists() else b""
    client = module_app.test_client()
    capture, image = no_face_capture(), png_bytes(small_coffee())
    for template in TRAVERSAL_NAMES:
        name = template.format(marker=marker)
        for path, field, payload in (
            ("/v1/jobs", "liveness_data_file", capture),
            ("/face/liveness_image", "image", image),
        ):
            resp = client.post(
                path,
                data={field: (io.BytesIO(payload), name)},
                headers=fuzz_key.headers,
                content_type="multipart/form-data",
            )
            assert resp.status_code in (200, 202), resp.get_json()
            assert marker not in resp.get_data(as_text=True)
    roots = [ROOT, base_settings.data_path.parent, Path(tempfile.gettempdir())]
    assert find_files(marker, roots) == []
    assert (passwd.read_bytes() if passwd.exists() else b"") == passwd_before


@pytest.mark.parametrize(
    "path",
    [
        "/docs/../../pyproject.toml",
        "/docs/..%2f..%2fpyproject.toml",
        "/docs/%2e%2e/%2e%2e/pyproject.toml",
        "/docs/....//....//pyproject.toml",
        "/docs//etc/passwd",
        "/docs/%2fetc%2fpasswd",
        "/docs/..\\..\\pyproject.toml",
    ],
)
def test_docs_assets_cannot_leave_their_folder(module_app: Flask, path: str) -> None:
    # A doubled slash is first redirected to the merged path (on this server), then 404.
    resp = module_app.test_client().get(path, follow_redirects=True)
    assert resp.status_code == 404, (path, resp.status_code)
    for hop in resp.history:
        assert urlsplit(hop.headers["Location"]).path.startswith("/docs/"), hop.headers
    assert b"[build-system]" not in resp.get_data() and b"root:" not in resp.get_data()


# --- 3c. a slow upload and raw header injection against the real gunicorn ----------------------

UPLOAD_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def real_api(
    base_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, int]]:
    settings_ = base_settings.replace(upload_timeout_s=UPLOAD_TIMEOUT_S, sync_wait_s=0.5)
    proc, base = start_api(settings_, tmp_path_factory.mktemp("abuse-api") / "api.log")
    try:
        yield base, int(base.rsplit(":", 1)[1])
    finally:
        proc.stop()


def request_head(port: int, key: Key, length: int, boundary: str = "b") -> bytes:
    return (
        f"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"X-DF-API-ID: {key.api_id}\r\nX-DF-API-SECRET: {key.api_secret}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def garbage_upload(size: int = 3000) -> bytes:
    return (
        b'--b\r\nContent-Disposition: form-data; name="liveness_data_file"; filename="c.pb"\r\n'
        b"\r\n" + b"\x07" * size + b"\r\n--b--\r\n"
    )


def read_answer(sock: socket.socket, timeout: float) -> bytes:
    """What the server answers before it closes (b"" when it just closes or resets)."""
    sock.settimeout(timeout)
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
            if b"\r\n\r\n" in out and out.endswith(b"}\n"):
                break
    except (ConnectionResetError, TimeoutError):
        pass
    return out


def healthz_seconds(base: str) -> float:
    started = time.monotonic()
    assert requests.get(base + "/healthz", timeout=10).status_code == 200
    return time.monotonic() - started


def test_slow_uploads_do_not_hold_the_server(
    real_api: tuple[str, int], make_key: Callable[..., Key], sessions: Any
) -> None:
    base, port = real_api
    slow_key, other = make_key(), make_key()
    body = garbage_upload()
    answers: dict[str, bytes] = {}

    def trickle(name: str, stall_after: int | None) -> None:
        """The body in 100-byte pieces every 50 ms; or stop after ``stall_after`` bytes."""
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(request_head(port, slow_key, len(body)))
            sent = 0
            while sent < len(body):
                if stall_after is not None and sent >= stall_after:
                    break
                sock.sendall(body[sent : sent + 100])
                sent += 100
                time.sleep(0.05)
            answers[name] = read_answer(sock, UPLOAD_TIMEOUT_S + 8)

    # Two that finish within the deadline (1.5 s), two that stall half-way.
    threads = [threading.Thread(target=trickle, args=(f"complete{i}", None)) for i in range(2)] + [
        threading.Thread(target=trickle, args=(f"stalled{i}", 1500)) for i in range(2)
    ]
    for t in threads:
        t.start()
    time.sleep(0.3)
    # Meanwhile everyone else is served at once, a real submission included.
    assert healthz_seconds(base) < 1.5
    ok = requests.post(
        base + "/v1/jobs",
        files={"liveness_data_file": ("c.pb", no_face_capture())},
        headers=other.headers,
        timeout=10,
    )
    assert ok.status_code == 202, ok.text
    for t in threads:
        t.join(timeout=30)
    for name in ("complete0", "complete1"):  # answered: the garbage is refused
        assert answers[name].startswith(b"HTTP/1.1 400"), answers[name][:200]
        assert b'"status":"INVALID_ARGUMENT"' in answers[name]
    for name in ("stalled0", "stalled1"):  # answered 400 at the deadline, or just closed
        assert answers[name] == b"" or answers[name].startswith(b"HTTP/1.1 400"), answers[name]
    assert job_count(sessions, slow_key.api_id) == 0


def test_more_stalled_uploads_than_threads_only_delay_the_server_until_the_deadline(
    real_api: tuple[str, int], key: Key, sessions: Any
) -> None:
    """2 processes x 16 threads read bodies; 40 stalled uploads hold every one of them, but only
    until ANTIHACK_UPLOAD_TIMEOUT_S: then they are answered (or closed) and the API serves
    again. (Without the deadline it stopped answering for good.)"""
    base, port = real_api
    socks = []
    started = time.monotonic()
    for _ in range(40):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(request_head(port, key, 100_000) + b"--b\r\n")
        socks.append(sock)
    try:
        healthz_seconds(base)  # may wait for a thread, never for more than the deadline
        assert time.monotonic() - started < UPLOAD_TIMEOUT_S + 8
        for sock in socks:
            answer = read_answer(sock, UPLOAD_TIMEOUT_S + 8)
            assert answer == b"" or answer.startswith(b"HTTP/1.1 400"), answer[:200]
        assert healthz_seconds(base) < 1
    finally:
        for sock in socks:
            sock.close()
    assert job_count(sessions, key.api_id) == 0


@pytest.mark.parametrize(
    "header",
    [
        f"Idempotency-Key: a\r\n{INJECTED}: 1",
        f"Idempotency-Key: a\n{INJECTED}: 1",
        f"Idempotency-Key: a\r{INJECTED}: 1",
        f"Idempotency-Key: a\r\n {INJECTED}: folded",
        f"X-DF-API-ID: ak_x\r{INJECTED}: 1",
        "Idempotency-Key: \x00\x7f",
    ],
)
def test_raw_crlf_header_injection_on_the_real_server(
    real_api: tuple[str, int], key: Key, sessions: Any, header: str
) -> None:
    """Whatever gunicorn makes of a header with CR/LF (a second header, a folded line, or a
    refusal), nothing injected comes back in the answer's headers and no job is made."""
    _, port = real_api
    body = garbage_upload(10)
    head = request_head(port, key, len(body)).replace(
        b"Content-Type:", header.encode("latin-1") + b"\r\nContent-Type:"
    )
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head + body)
        answer = read_answer(sock, 10)
    status_line, _, rest = answer.partition(b"\r\n")
    assert re.match(rb"HTTP/1\.[01] 4\d\d ", status_line), answer[:300]
    headers = rest.split(b"\r\n\r\n", 1)[0]
    assert INJECTED.lower().encode() not in headers.lower(), headers
    assert job_count(sessions, key.api_id) == 0


# --- 5. secrets never reach the logs, and are not stored in plain text -------------------------


class Inbox:
    """A webhook receiver in a thread: records every call and its signature verdict."""

    def __init__(self, secret: str) -> None:
        self.calls: list[dict[str, Any]] = []
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    Webhook(secret).verify(body, headers)
                    verified = True
                except WebhookVerificationError:
                    verified = False
                inbox.calls.append({"id": headers.get("webhook-id"), "verified": verified})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# Reads the files named in argv, prints the labels of the secrets (a JSON object on stdin)
# found in their bytes.
SCAN_FILES = """
import json, sys
secrets = json.load(sys.stdin)
raw = b"".join(open(name, "rb").read() for name in sys.argv[1:])
print(json.dumps([label for label, value in secrets.items() if value.encode() in raw]))
"""


def test_secrets_never_reach_the_logs_and_are_stored_hashed_or_encrypted(
    base_settings: Settings,
    start_api: Callable[..., str],
    start_worker: Callable[..., Any],
    sessions: Any,
    tmp_path: Path,
) -> None:
    """A whole flow with real processes at DEBUG level: admin token, key creation, a signed
    submission, a signed webhook delivered, a rotation, failed logins. Then every log file is
    searched for every secret."""
    admin_token = "adm-" + secrets.token_urlsafe(32)
    settings_ = base_settings.replace(
        admin_token=admin_token, log_level="DEBUG", log_format="json", webhook_timeout_s=5
    )
    base = start_api(settings_)
    start_worker(settings_, concurrency=1)
    admin = {"Authorization": f"Bearer {admin_token}"}

    made = requests.post(
        base + "/admin/keys",
        json={"name": "secret-flow", "require_signed": True},
        headers=admin,
        timeout=10,
    )
    assert made.status_code == 201, made.text
    key = made.json()
    inbox = Inbox(key["webhook_secret"])
    try:
        patched = requests.patch(
            f"{base}/admin/keys/{key['api_id']}",
            json={"webhook_url": inbox.url},
            headers=admin,
            timeout=10,
        )
        assert patched.status_code == 200, patched.text
        creds = {"X-DF-API-ID": key["api_id"], "X-DF-API-SECRET": key["api_secret"]}
        signed = no_face_capture(sign_secret=key["sdk_secret"].encode())
        done = requests.post(
            base + "/face/liveness_anti_hack",
            files={"liveness_data_file": ("c.pb", signed)},
            data={"return_extra": "1"},
            headers={**creds, "Idempotency-Key": "secret-flow-1"},
            timeout=90,
        )
        assert done.status_code == 200, done.text
        rid = done.json()["request_id"]
        job = requests.get(f"{base}/v1/jobs/{rid}", headers=creds, timeout=10).json()
        assert "signature_invalid" not in job["reasons"]  # the worker used the SDK secret
        wait_until(lambda: inbox.calls, 60, "the signed webhook")
        assert inbox.calls[0]["verified"] is True  # signed with the webhook secret

        # Failures log too: a wrong secret, a wrong admin token, a secret in a URL.
        wrong = {**creds, "X-DF-API-SECRET": key["api_secret"][:-2] + "xx"}
        assert requests.get(base + "/v1/usage", headers=wrong, timeout=10).status_code == 401
        bad_admin = {"Authorization": f"Bearer {admin_token}x"}
        assert requests.get(base + "/admin/keys", headers=bad_admin, timeout=10).status_code == 401
        leak = requests.post(
            base + "/v1/jobs",
            data={"liveness_data_url": f"http://u:{key['api_secret']}@127.0.0.1:1/c.pb"},
            files={"x": ("x", b"")},
            headers=creds,
            timeout=10,
        )
        assert leak.status_code == 400
        assert key["api_secret"] not in leak.text
        rotated = requests.post(
            f"{base}/admin/keys/{key['api_id']}/rotate", headers=admin, timeout=10
        ).json()
        listed = requests.get(base + "/admin/keys", headers=admin, timeout=10)
        assert listed.status_code == 200 and key["api_secret"] not in listed.text
    finally:
        inbox.close()

    secret_values = {
        "admin token": admin_token,
        "server secret key": settings_.secret_key,
    }
    for label, made_keys in (("", key), ("rotated ", rotated)):
        secret_values |= {
            f"{label}api secret": made_keys["api_secret"],
            f"{label}webhook secret": made_keys["webhook_secret"],
            f"{label}webhook secret body": made_keys["webhook_secret"].removeprefix("whsec_"),
            f"{label}sdk secret": made_keys["sdk_secret"],
        }

    # The logs: stop the processes (their output is flushed), then read every log file.
    logs = sorted(tmp_path.glob("*.log"))
    assert {p.name for p in logs} >= {"api0.log", "worker0.log"}
    wait_until(lambda: "webhook attempt" in (tmp_path / "worker0.log").read_text(), 10, "logs")
    text = "\n".join(p.read_text(errors="replace") for p in logs)
    assert len(text) > 1000 and '"level": "DEBUG"' in text  # the run really logged
    leaked = [label for label, value in secret_values.items() if value in text]
    assert not leaked, f"secrets in the logs: {leaked}"

    # At rest: the api_keys row holds a keyed hash and ciphertexts, never a secret.
    with transaction(sessions) as s:
        row = s.execute(
            sa.text("SELECT * FROM api_keys WHERE id = :id"), {"id": key["api_id"]}
        ).one()
    stored = " ".join(str(v) for v in row)
    leaked = [label for label, value in secret_values.items() if value in stored]
    assert not leaked, f"secrets stored in plain text: {leaked}"
    assert row.secret_hash == hash_secret(settings_.secret_key, rotated["api_secret"])
    database = settings_.effective_database_url
    if database.startswith("sqlite:///"):  # the bytes on disk too (database and its WAL)
        path = Path(database.removeprefix("sqlite:///"))
        # Read by another process: closing any descriptor of the database file drops every
        # SQLite lock this process holds on it (POSIX locks are per process), and the next
        # process to close its connection would then delete the WAL under our feet.
        scan = subprocess.run(
            [sys.executable, "-c", SCAN_FILES, *map(str, path.parent.glob(path.name + "*"))],
            input=json.dumps(secret_values),
            capture_output=True,
            text=True,
            check=True,
        )
        assert json.loads(scan.stdout) == [], f"secrets in the database file: {scan.stdout}"


# --- 6. constant-time comparisons --------------------------------------------------------------


@pytest.fixture
def compare_digest_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, Any]]:
    """Record every ``hmac.compare_digest`` call (the real one still decides)."""
    calls: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    return calls


def test_api_secrets_are_compared_in_constant_time(
    client: Any, key: Key, base_settings: Settings, compare_digest_calls: list[Any]
) -> None:
    expected = hash_secret(base_settings.secret_key, key.api_secret)
    assert client.get("/v1/usage", headers=key.headers).status_code == 200
    assert (expected, expected) in compare_digest_calls
    compare_digest_calls.clear()
    wrong = {**key.headers, "X-DF-API-SECRET": key.api_secret[:-1] + "x"}
    assert client.get("/v1/usage", headers=wrong).status_code == 401
    assert [c[1] for c in compare_digest_calls] == [expected]
    # An unknown id is hashed and compared all the same (no timing oracle for valid ids).
    compare_digest_calls.clear()
    unknown = {"X-DF-API-ID": "ak_" + "0" * 24, "X-DF-API-SECRET": key.api_secret}
    assert client.get("/v1/usage", headers=unknown).status_code == 401
    assert len(compare_digest_calls) == 1


def test_admin_and_metrics_tokens_are_compared_in_constant_time(
    base_settings: Settings, compare_digest_calls: list[Any]
) -> None:
    client = create_test_app(base_settings.replace(metrics_token="m" * 40)).test_client()
    assert client.get("/admin/keys", headers=ADMIN).status_code == 200
    assert (ADMIN_TOKEN.encode(), ADMIN_TOKEN.encode()) in compare_digest_calls
    compare_digest_calls.clear()
    assert client.get("/admin/keys", headers={"Authorization": "Bearer x" * 3}).status_code == 401
    assert compare_digest_calls and compare_digest_calls[-1][1] == ADMIN_TOKEN.encode()
    compare_digest_calls.clear()
    metrics = client.get("/metrics", headers={"Authorization": "Bearer " + "m" * 40})
    assert metrics.status_code == 200
    assert (b"m" * 40, b"m" * 40) in compare_digest_calls


def test_capture_signatures_are_compared_in_constant_time(
    compare_digest_calls: list[Any],
) -> None:
    capture = pb.Capture.FromString(no_face_capture(sign_secret=b"sdk-secret"))
    assert verify_signature(capture, b"sdk-secret")
    assert compare_digest_calls == [(capture.signature, capture.signature)]
    assert not verify_signature(capture, b"another-secret")


@pytest.mark.parametrize(
    "function",
    [
        check_secret,
        admin_only,
        verify_signature,
        metrics_check_token,
        admin_ui.login,
        admin_ui.logout,
        admin_ui._sign_in_id,
    ],
)
def test_no_secret_is_compared_with_equality(function: Callable[..., Any]) -> None:
    """The code of each check: compare_digest, and no ``==``/``!=`` on a secret-like name.
    (The service only signs webhooks, it never checks a webhook signature; receivers verify
    with ``standardwebhooks``, which compares in constant time.)"""
    source = inspect.getsource(function)
    assert "compare_digest" in source
    assert not re.search(
        r"(token|secret|signature|digest|hash|expected)\w*\s*[!=]=|[!=]=\s*\w*(token|secret|signature|expected)",
        source,
    ), source


# --- NUL characters (PostgreSQL refuses them in text: they must never reach a query) -----------

NUL_REQUESTS = [
    ("GET", "/v1/jobs/TID%00", None),
    ("DELETE", "/v1/jobs/%00", None),
    ("POST", "/v1/jobs/%00/redeliver", None),
    ("GET", "/v1/webhooks/deliveries/%00", None),
    ("GET", "/v1/webhooks/deliveries?before=%00", None),
    ("GET", "/v1/usage?days=1&x=%00", None),
    ("GET", "/admin/keys/%00", None),
    ("GET", "/admin/usage?api_id=%00", None),
    ("GET", "/admin/webhooks/deliveries?api_id=%00", None),
    ("GET", "/admin/webhooks/deliveries/%00", None),
    ("POST", "/admin/keys", {"json": {"name": "a\x00b"}}),
    ("POST", "/admin/keys", {"json": {"name": "n" * 201}}),
    ("POST", "/admin/keys", {"json": {"name": "x", "permissions": "jobs\x00"}}),
    ("POST", "/admin/keys", {"json": {"name": "x", "webhook_url": "http://a\x00b/"}}),
    ("POST", "/v1/jobs", {"data": {"image_id": "IMG\x00"}}),
    ("POST", "/face/liveness_anti_hack", {"data": {"image_id": "\x00"}}),
    ("POST", "/v1/jobs", {"data": {"liveness_data_url": "http://a\x00b/"}}),
]


@pytest.mark.parametrize(("method", "path", "body"), NUL_REQUESTS)
def test_nul_characters_are_refused_not_a_server_error(
    module_app: Flask, fuzz_key: Key, method: str, path: str, body: dict[str, Any] | None
) -> None:
    kw: dict[str, Any] = dict(body or {})
    if "data" in kw:
        kw["content_type"] = "multipart/form-data"
    headers = {**fuzz_key.headers, **ADMIN}
    resp = module_app.test_client().open(path, method=method, headers=headers, **kw)
    assert_seed_error(resp, (400,))  # INVALID_ARGUMENT, or DOWNLOAD_ERROR for the URL


def test_a_nul_in_the_api_id_header_is_refused(module_app: Flask, fuzz_key: Key) -> None:
    resp = module_app.test_client().get(
        "/v1/usage",
        headers=fuzz_key.headers,
        environ_overrides={"HTTP_X_DF_API_ID": fuzz_key.api_id + "\x00"},
    )
    assert_seed_error(resp, (400,), "INVALID_ARGUMENT")
