"""Issue 16, the holes an outside test found: a JPEG whose header walk disagreed with libjpeg,
downloads that trickle, non-global addresses the SSRF guard let through, werkzeug's and
gunicorn's own answers to too many form parts, a long request line and a huge header.

Network: every server here listens on 127.0.0.1, and every non-loopback address in this file is
only handed to the guard's decision (``forbidden``, ``resolve``), which never connects."""

from __future__ import annotations

import contextlib
import io
import ipaddress
import json
import os
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import requests
from flask.testing import FlaskClient

from antihack.shared.domain.capture import CaptureError, CaptureLimits, check_image, decode_frames
from antihack.shared.domain.errors import ApiError
from antihack.shared.domain.keys import KeyOptions, create_key
from antihack.shared.infra import urlguard
from antihack.shared.infra.db import transaction
from antihack.shared.infra.settings import Settings
from antihack.shared.infra.urlguard import UrlRefused, forbidden, resolve
from antihack.shared.proto import liveness_pb2 as pb
from tests import devstack
from tests.conftest import Key, create_test_app
from tests.helpers import job_count, png_with_header

MiB = 1024 * 1024
SEED = "/face/liveness_anti_hack"


def post(client: FlaskClient, key: Key, data: dict[str, Any], path: str = "/v1/jobs") -> Any:
    return client.post(path, data=data, headers=key.headers, content_type="multipart/form-data")


def seed_error(body: Any, status: str, reason_part: str = "") -> None:
    """``body`` is the seed's error: its exact keys, the status, a reason with ``reason_part``."""
    assert isinstance(body, dict) and set(body) == {"status", "reason", "request_id"}, body
    assert body["status"] == status, body
    assert body["request_id"].startswith("TID") and len(body["request_id"]) == 35, body
    assert reason_part.lower() in body["reason"].lower(), body


# --- 1. a JPEG whose marker stream hides a second frame header --------------------------------


def small_jpeg() -> bytes:
    ok, buf = cv2.imencode(".jpg", np.full((64, 64, 3), 128, np.uint8))
    assert ok
    return bytes(buf.tobytes())


def with_size(jpeg: bytes, width: int, height: int) -> bytes:
    """``jpeg`` with its (baseline) frame header claiming ``width`` x ``height``."""
    i = jpeg.index(b"\xff\xc0")
    return jpeg[: i + 5] + struct.pack(">HH", height, width) + jpeg[i + 9 :]


def frame_header(jpeg: bytes) -> bytes:
    i = jpeg.index(b"\xff\xc0")
    return jpeg[i : i + 2 + struct.unpack(">H", jpeg[i + 2 : i + 4])[0]]


def jpeg_bomb(width: int = 2048, height: int = 65472) -> bytes:
    """~700 bytes that libjpeg decodes to ``width`` x ``height`` (134 Mpx, 400 MB as RGB).

    After SOI comes ``FF 00 LL LL``: libjpeg skips ``FF 00`` as garbage and reads on into a
    whole JPEG whose frame header claims the big size (its entropy data runs out and libjpeg
    fills the rest grey). A walk that reads ``FF 00`` as a segment of length LLLL jumps over
    all of it to a second, 64x64 frame header placed after the end of the image."""
    small = small_jpeg()
    body = with_size(small, width, height)[2:]
    return b"\xff\xd8\xff\x00" + struct.pack(">H", 2 + len(body)) + body + frame_header(small)


def one_frame_capture(image: bytes) -> bytes:
    capture = pb.Capture(version=1, session_id="bomb")
    capture.frames.add(image=image, best=True)
    return bytes(capture.SerializeToString())


def test_the_bomb_is_what_the_issue_describes() -> None:
    """The crafted file really decodes to the big size (so the refusals below mean something)."""
    bomb = jpeg_bomb(64, 4096)  # the same trick, small enough to decode here
    decoded = cv2.imdecode(np.frombuffer(bomb, np.uint8), cv2.IMREAD_COLOR)
    assert decoded is not None and decoded.shape[:2] == (4096, 64)


def test_jpeg_bomb_is_refused_at_submission(client: FlaskClient, key: Key, sessions: Any) -> None:
    bomb = jpeg_bomb()
    assert len(bomb) < 1000
    capture = one_frame_capture(bomb)
    for path in ("/v1/jobs", SEED):
        resp = post(client, key, {"liveness_data_file": (io.BytesIO(capture), "c.pb")}, path)
        assert resp.status_code == 400, resp.get_json()
        seed_error(resp.get_json(), "INVALID_ARGUMENT", "FF00")
    resp = post(client, key, {"image": (io.BytesIO(bomb), "i.jpg")}, "/face/liveness_image")
    assert resp.status_code == 400, resp.get_json()
    seed_error(resp.get_json(), "INVALID_ARGUMENT", "FF00")
    assert job_count(sessions, key.api_id) == 0


def test_jpeg_bomb_is_never_decoded_by_the_worker() -> None:
    """The worker's decode checks the header again: a capture that skipped the API's parse (a
    row from before this fix) fails without a large allocation."""
    capture = pb.Capture(version=1)
    capture.frames.add(image=jpeg_bomb(), best=True)
    tracemalloc.start()
    try:
        with pytest.raises(CaptureError, match="FF00"):
            decode_frames(capture, CaptureLimits())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * MiB, peak  # decoding would allocate 400 MB


def _exif_app1() -> bytes:
    payload = b"Exif\x00\x00" + b"\x00" * 2000
    return b"\xff\xe1" + struct.pack(">H", 2 + len(payload)) + payload


@pytest.mark.parametrize(
    ("name", "edit", "reason"),
    [
        ("FF00 before the frame header", lambda j: j[:2] + b"\xff\x00" + j[2:], "FF00"),
        ("garbage between segments", lambda j: j[:2] + b"\x00\x00" + j[2:], "stray bytes"),
        ("reserved marker", lambda j: j[:2] + b"\xff\x02\x00\x04ab" + j[2:], "FF02"),
        ("JPG marker", lambda j: j[:2] + b"\xff\xc8\x00\x04ab" + j[2:], "FFC8"),
        ("scan before frame", lambda j: j[:2] + b"\xff\xda\x00\x04ab" + j[2:], "FFDA"),
        ("second SOI", lambda j: j[:2] + j, "FFD8"),
    ],
)
def test_a_marker_stream_libjpeg_reads_differently_is_refused(
    name: str, edit: Any, reason: str
) -> None:
    with pytest.raises(CaptureError) as info:
        check_image(edit(small_jpeg()), CaptureLimits())
    assert info.value.status == "INVALID_ARGUMENT" and reason in info.value.reason, name


@pytest.mark.parametrize(
    ("name", "jpeg"),
    [
        ("baseline", lambda: small_jpeg()),
        ("progressive", lambda: _encode(cv2.IMWRITE_JPEG_PROGRESSIVE, 1)),
        ("optimized", lambda: _encode(cv2.IMWRITE_JPEG_OPTIMIZE, 1)),
        (
            "EXIF APP1 and fill bytes",
            lambda: b"\xff\xd8" + _exif_app1() + b"\xff" + small_jpeg()[2:],
        ),
        ("restart markers", lambda: _encode(cv2.IMWRITE_JPEG_RST_INTERVAL, 1)),
    ],
)
def test_real_jpegs_pass_and_decode_to_the_size_their_header_says(name: str, jpeg: Any) -> None:
    data = jpeg()
    header = check_image(data, CaptureLimits())
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert decoded is not None, name
    assert (header.height, header.width) == decoded.shape[:2], name


def _encode(flag: int, value: int) -> bytes:
    image = np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", image, [flag, value])
    assert ok
    return bytes(buf.tobytes())


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload)
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _rows(width: int, height: int) -> bytes:
    return zlib.compress((b"\x00" + b"\x80" * 3 * width) * height, 9)


def _fctl(seq: int, width: int, height: int) -> bytes:
    return _png_chunk(b"fcTL", struct.pack(">IIIIIHHBB", seq, width, height, 0, 0, 1, 1, 0, 0))


@pytest.mark.parametrize(
    ("name", "png"),
    [
        (
            "a second, larger IHDR",
            lambda: (
                png_with_header(64, 64, _rows(64, 64))[:33]
                + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 4096, 4096, 8, 2, 0, 0, 0))
                + png_with_header(64, 64, _rows(64, 64))[33:]
            ),
        ),
        (
            "an APNG frame larger than IHDR",
            lambda: (
                png_with_header(64, 64, b"")[:33]
                + _png_chunk(b"acTL", struct.pack(">II", 1, 0))
                + _fctl(0, 4096, 4096)
                + _png_chunk(b"IDAT", _rows(4096, 16))
                + _png_chunk(b"IEND", b"")
            ),
        ),
        (
            "an APNG second frame larger than IHDR",
            lambda: (
                png_with_header(64, 64, b"")[:33]
                + _png_chunk(b"acTL", struct.pack(">II", 2, 0))
                + _fctl(0, 64, 64)
                + _png_chunk(b"IDAT", _rows(64, 64))
                + _fctl(1, 4096, 4096)
                + _png_chunk(b"fdAT", struct.pack(">I", 2) + _rows(4096, 4096))
                + _png_chunk(b"IEND", b"")
            ),
        ),
    ],
)
def test_png_cannot_decode_larger_than_its_ihdr(name: str, png: Any) -> None:
    """libpng reads IHDR first and refuses a second one; OpenCV refuses APNG frames outside
    IHDR: a PNG never decodes larger than the IHDR the header check read."""
    data = png()
    header = check_image(data, CaptureLimits())
    assert (header.width, header.height) == (64, 64)
    capture = pb.Capture(version=1)
    capture.frames.add(image=data, best=True)
    try:
        frames = decode_frames(capture, CaptureLimits())
    except CaptureError as exc:
        assert exc.status == "DETETION_FAILED", name
    else:
        assert all(f.shape[:2] == (64, 64) for f in frames), name


def test_opencv_itself_refuses_more_pixels_than_a_frame_may_have() -> None:
    """Defence in depth: importing ``shared`` caps OpenCV's decoder (OPENCV_IO_MAX_IMAGE_PIXELS)
    at 8192 x 8192, so even a header this service misread could not decode to 1 Gpx."""
    big = with_size(small_jpeg(), 9000, 8000)
    code = (
        "import sys, shared, cv2, numpy as np\n"
        "data = np.frombuffer(sys.stdin.buffer.read(), np.uint8)\n"
        "try:\n"
        "    print(cv2.imdecode(data, cv2.IMREAD_COLOR) is None)\n"
        "except cv2.error:\n"
        "    print('refused')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_IO_MAX_IMAGE_PIXELS"}
    out = subprocess.run(
        [sys.executable, "-c", code], input=big, capture_output=True, env=env, check=True
    )
    assert out.stdout.decode().strip() in ("refused", "True"), out


def test_onnxruntime_telemetry_is_off_in_every_process_of_ours() -> None:
    """onnxruntime's official builds phone home (1DS telemetry) unless ORT_DISABLE_TELEMETRY is
    set before their first session; importing ``shared`` sets it, an operator's value wins."""
    code = "import os, shared; print(os.environ.get('ORT_DISABLE_TELEMETRY'))"
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env, check=True)
    assert out.stdout.decode().strip() == "1"
    env["ORT_DISABLE_TELEMETRY"] = "0"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env, check=True)
    assert out.stdout.decode().strip() == "0"


# --- 2. downloads that trickle --------------------------------------------------------------


class Trickle(socketserver.ThreadingTCPServer):
    """A loopback HTTP server that answers one byte every 0.2 s, in its headers (``/headers``)
    or its body (anything else), for at most ``limit_s`` seconds; counts its connections."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, limit_s: float = 20.0) -> None:
        self.limit_s = limit_s
        self.connections = 0
        self.stop = threading.Event()
        super().__init__(("127.0.0.1", 0), TrickleHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class TrickleHandler(socketserver.BaseRequestHandler):
    server: Trickle

    def handle(self) -> None:
        self.server.connections += 1
        request = self.request.recv(65536)
        if request.split(b" ", 2)[1:2] == [b"/headers"]:
            head, drip = b"HTTP/1.1 200 OK\r\nX-Slow: ", b"a"
        else:
            head, drip = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n", b"x"
        ends = time.monotonic() + self.server.limit_s
        with contextlib.suppress(OSError):
            self.request.sendall(head)
            while time.monotonic() < ends and not self.server.stop.wait(0.2):
                self.request.sendall(drip)


@pytest.fixture
def trickle() -> Iterator[Trickle]:
    server = Trickle()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.stop.set()
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("where", ["body", "headers"])
def test_a_trickling_download_is_cut_at_its_deadline(
    base_settings: Settings, key: Key, trickle: Trickle, where: str
) -> None:
    """Before: each byte restarted the read timeout, and the deadline was looked at once per
    64 KiB, so the request lasted as long as the server liked (88 s in the report)."""
    app = create_test_app(base_settings.replace(download_timeout_s=1))
    resp = post(app.test_client(), key, {"liveness_data_url": f"{trickle.url}/{where}"})
    assert resp.status_code == 400, resp.get_json()
    seed_error(resp.get_json(), "DOWNLOAD_ERROR", "1 s deadline")


@pytest.mark.parametrize("where", ["body", "headers"])
def test_a_trickling_webhook_receiver_is_cut_at_its_deadline(trickle: Trickle, where: str) -> None:
    """The webhook sender's POST has the same wall-clock deadline (ANTIHACK_WEBHOOK_TIMEOUT_S)."""
    with pytest.raises(UrlRefused, match="1 s deadline"):
        urlguard.post(f"{trickle.url}/{where}", b"{}", {}, allow_private=True, timeout=1)


def test_slow_downloads_leave_the_api_answering(
    base_settings: Settings, key: Key, trickle: Trickle, tmp_path: Path
) -> None:
    """One API process with 4 threads, 2 download slots, 8 trickling downloads at once: the
    slots' holders end with DOWNLOAD_ERROR at the deadline, the others are told at once to come
    back (RATE_LIMIT_EXCEEDED + Retry-After), and /healthz answers all along."""
    settings = base_settings.replace(download_timeout_s=4, max_concurrent_downloads=2)
    proc, base = devstack.start_api(
        settings, tmp_path / "api.log", "--processes", "1", "--threads", "4"
    )
    try:
        url = {"liveness_data_url": (None, f"{trickle.url}/body")}  # a text part

        def submit(_: int) -> requests.Response:
            return requests.post(f"{base}/v1/jobs", files=url, headers=key.headers, timeout=60)

        with ThreadPoolExecutor(8) as pool:
            answers = pool.map(submit, range(8))
            devstack.wait_until(lambda: trickle.connections >= 2, 10, "two downloads")
            health = requests.get(f"{base}/healthz", timeout=10)
            results = list(answers)
    finally:
        proc.stop()
    assert health.status_code == 200
    codes = sorted(r.status_code for r in results)
    assert 400 in codes and 403 in codes, [(r.status_code, r.text) for r in results]
    for r in results:
        if r.status_code == 400:
            seed_error(r.json(), "DOWNLOAD_ERROR", "deadline")
        else:
            assert r.status_code == 403, r.text
            seed_error(r.json(), "RATE_LIMIT_EXCEEDED", "retry")
            assert r.headers["Retry-After"] == "4"
    assert trickle.connections <= 2 * codes.count(400)


# --- 3. the SSRF guard: global unicast only ---------------------------------------------------

ADDRESSES = [
    # (address, refused)
    ("8.8.8.8", False),
    ("1.1.1.1", False),
    ("2001:4860:4860::8888", False),
    ("::ffff:8.8.8.8", False),
    ("2002:808:808::1", False),  # 6to4 of a global address
    ("64:ff9b::808:808", False),  # NAT64 of a global address
    ("127.0.0.1", True),
    ("10.0.0.1", True),
    ("172.16.0.1", True),
    ("192.168.1.1", True),
    ("169.254.169.254", True),  # cloud metadata (link-local)
    ("100.100.100.200", True),  # Alibaba metadata, in shared address space
    ("100.64.0.1", True),  # shared address space (carrier-grade NAT)
    ("100.127.255.254", True),
    ("0.0.0.0", True),
    ("198.18.0.1", True),  # benchmarking
    ("192.0.2.1", True),  # documentation
    ("240.0.0.1", True),  # reserved
    ("255.255.255.255", True),
    ("224.0.0.1", True),  # multicast
    ("::1", True),
    ("::", True),
    ("fe80::1", True),
    ("fc00::1", True),
    ("fd00:ec2::254", True),  # AWS metadata over IPv6
    ("fec0::1", True),  # site-local (deprecated)
    ("ff0e::1", True),  # global-scope multicast
    ("::ffff:127.0.0.1", True),  # IPv4-mapped
    ("::ffff:100.64.0.1", True),
    ("::7f00:1", True),  # IPv4-compatible (deprecated)
    ("::808:808", True),
    ("2002:7f00:1::", True),  # 6to4 of loopback
    ("2002:a00:1::", True),  # 6to4 of 10.0.0.1
    ("2002:6440:1::", True),  # 6to4 of 100.64.0.1
    ("64:ff9b::a00:1", True),  # NAT64 of 10.0.0.1
    ("64:ff9b::7f00:1", True),  # NAT64 of loopback
    ("64:ff9b:1::808:808", True),  # local-use NAT64
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", True),  # Teredo
    ("2001:db8::1", True),  # documentation
]


@pytest.mark.parametrize(("address", "refused"), ADDRESSES)
def test_the_guard_allows_only_global_unicast(address: str, refused: bool) -> None:
    assert forbidden(ipaddress.ip_address(address)) is refused


@pytest.mark.parametrize(
    "host",
    [
        "127.1",
        "2130706433",
        "0177.0.0.1",
        "0x7f.0.0.1",
        "0x7f000001",
        "017700000001",
        "[::ffff:127.0.0.1]",
        "100.64.0.1",
        "1681915905",  # 100.64.0.1 in decimal
        "0x64.0x40.0.1",
        "[2002:6440:1::]",
        "[64:ff9b::a00:1]",
    ],
)
def test_numeric_host_forms_are_resolved_then_refused(host: str) -> None:
    """getaddrinfo reads decimal, octal, hex and short IPv4 forms without a DNS query; the guard
    checks the address they mean (``resolve`` never connects)."""
    with pytest.raises(UrlRefused, match="not global"):
        resolve(f"http://{host}/x", allow_private=False)


def test_allow_private_urls_still_allows_loopback() -> None:
    assert str(resolve("http://127.0.0.1:9/x", allow_private=True).address) == "127.0.0.1"


def test_callback_and_webhook_urls_in_shared_address_space_are_refused(
    base_settings: Settings, key: Key, sessions: Any
) -> None:
    """Every place a URL comes in goes through the same guard (decided at submission and at key
    creation; the sender and the downloader decide again before they connect)."""
    app = create_test_app(base_settings.replace(allow_private_urls=False))
    capture = one_frame_capture(small_jpeg())
    resp = post(
        app.test_client(),
        key,
        {
            "liveness_data_file": (io.BytesIO(capture), "c.pb"),
            "callback_url": "http://100.64.0.1/hook",
        },
    )
    assert resp.status_code == 400, resp.get_json()
    seed_error(resp.get_json(), "INVALID_ARGUMENT", "not global")
    # Refused before a job exists: no worker can ever POST to that address.
    assert job_count(sessions, key.api_id) == 0
    admin = {"Authorization": f"Bearer {base_settings.admin_token}"}
    resp = app.test_client().post(
        "/admin/keys", json={"name": "x", "webhook_url": "http://[2002:a00:1::]/h"}, headers=admin
    )
    assert resp.status_code == 400, resp.get_json()
    seed_error(resp.get_json(), "INVALID_ARGUMENT", "not global")
    with transaction(sessions) as s, pytest.raises(ApiError, match="not global"):
        create_key(
            s, base_settings.secret_key, KeyOptions(name="y", webhook_url="http://100.64.0.1/")
        )


# --- 4. too many form parts ------------------------------------------------------------------


def test_too_many_form_parts_says_so(client: FlaskClient, key: Key) -> None:
    """Before: 413 "request body larger than 10551296 bytes" for a 330 KB body."""
    fields = {f"f{i}": "x" * 8000 for i in range(40)}
    resp = post(client, key, fields)
    assert resp.status_code == 400, resp.get_json()
    seed_error(resp.get_json(), "INVALID_ARGUMENT", "more than 20 parts")


def test_a_huge_text_field_and_a_huge_body_are_still_413(
    base_settings: Settings, client: FlaskClient, key: Key
) -> None:
    resp = post(client, key, {"liveness_data_url": "h" * (2 * MiB)})
    assert resp.status_code == 413
    seed_error(resp.get_json(), "INVALID_ARGUMENT", "text field")
    small = create_test_app(base_settings.replace(max_upload_bytes=1000)).test_client()
    resp = post(small, key, {"liveness_data_file": (io.BytesIO(b"x" * 200_000), "c.pb")})
    assert resp.status_code == 413
    seed_error(resp.get_json(), "INVALID_ARGUMENT", "request body larger than")


# --- 5. gunicorn's own refusals -------------------------------------------------------------


def raw_exchange(base: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` as is; the answer's status, headers (lower-case names) and body."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


@pytest.fixture(scope="module")
def api_base(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``antihack api`` (gunicorn) for the module."""
    proc, base = devstack.start_api(base_settings, tmp_path_factory.mktemp("api") / "api.log")
    yield base
    proc.stop()


@pytest.mark.parametrize(
    ("name", "request_bytes", "code", "reason"),
    [
        (
            "10 KB path",
            b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            414,
            "request line",
        ),
        (
            "60 KB header",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 60_000 + b"\r\n\r\n",
            431,
            "headers are too large",
        ),
        ("malformed request line", b"HELLO\r\n\r\n", 400, "bad request"),
    ],
)
def test_gunicorn_refusals_are_seed_json_errors(
    api_base: str, name: str, request_bytes: bytes, code: int, reason: str
) -> None:
    """Before: gunicorn's own text/html pages, written before Flask sees the request."""
    status, headers, body = raw_exchange(api_base, request_bytes)
    assert status == code, (name, body[:200])
    assert headers["content-type"] == "application/json", (name, headers)
    seed_error(json.loads(body), "INVALID_ARGUMENT", reason)
