"""The submission's own multipart reading (api/form.py) answers exactly as werkzeug's parser, or
leaves the body to it: random bodies, written as real clients write them and then broken."""

from __future__ import annotations

import io
import string
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from urllib3 import encode_multipart_formdata
from werkzeug.datastructures import FileStorage, MultiDict
from werkzeug.formparser import FormDataParser
from werkzeug.test import encode_multipart

from antihack.api.form import plain_form, read_form

MAX_PARTS = 20
MAX_FIELD = 1024 * 1024
BOUNDARY_CHARS = string.ascii_letters + string.digits + "'+_-."
# What breaks a body in ways werkzeug reads differently from the plain shape (or refuses).
BREAKS = (
    b"\n",
    b"\r",
    b"\r\n",
    b"\r\n\r\n",
    b"--",
    b"\n--",
    b"\r--",
    b"\r\n--",
    b"\r\n ",
    b"\t",
    b":",
    b";",
    b'"',
    b"\xff",
    b"\x00",
)


def werkzeug_form(body: bytes, boundary: str, buffer: int = 64 * 1024) -> Any:
    """What Flask's request.form / request.files would be: (fields, files), or the error."""
    parser = FormDataParser(max_form_memory_size=MAX_FIELD, max_form_parts=MAX_PARTS, cls=MultiDict)
    try:
        _, form, files = parser.parse(
            io.BytesIO(body), "multipart/form-data", len(body), {"boundary": boundary}
        )
    except Exception as exc:  # werkzeug's refusals (413), which plain_form must not answer
        return type(exc).__name__
    return _shown(list(form.items(multi=True)), list(files.items(multi=True)))


def _shown(fields: list[tuple[str, str]], files: list[tuple[str, Any]]) -> Any:
    return (
        fields,
        [
            (name, f.filename, list(f.headers.items()), f.stream.read(), f.stream.seek(0))
            for name, f in files
        ],
    )


def ours(body: bytes, boundary: str) -> Any:
    found = plain_form(body, boundary, max_parts=MAX_PARTS, max_field_bytes=MAX_FIELD)
    if found is None:
        return None
    fields, files = MultiDict(found[0]), MultiDict(found[1])  # as read_form hands them on
    return _shown(list(fields.items(multi=True)), list(files.items(multi=True)))


def _client_bodies(draw: st.DrawFn, boundary: str) -> bytes:
    """A body as ``requests`` (urllib3) or werkzeug's test client writes it."""
    names = draw(
        st.lists(
            st.sampled_from(["liveness_data_file", "return_image", "callback_url", "x", "é"]),
            min_size=1,
            max_size=4,
        )
    )
    values = [draw(st.binary(max_size=2000)) for _ in names]
    as_file = [draw(st.booleans()) for _ in names]
    if draw(st.booleans()):
        fields: list[tuple[str, Any]] = [
            (n, ("c.pb", v, "application/octet-stream") if f else v.decode("latin-1"))
            for n, v, f in zip(names, values, as_file, strict=True)
        ]
        return bytes(encode_multipart_formdata(fields, boundary=boundary)[0])
    data: MultiDict[str, Any] = MultiDict()
    for n, v, f in zip(names, values, as_file, strict=True):
        data.add(n, FileStorage(io.BytesIO(v), "c.pb") if f else v.decode("latin-1"))
    return encode_multipart(data, boundary=boundary)[1]


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, str]:
    boundary = draw(st.text(BOUNDARY_CHARS, min_size=1, max_size=70))
    body = _client_bodies(draw, boundary)
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2, 3]))):
        where = draw(st.integers(0, len(body)))
        what = draw(st.sampled_from([*BREAKS, b"--" + boundary.encode()]))
        cut = draw(st.integers(0, 2))
        body = body[:where] + what + body[where + cut :]
    return body, boundary


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=bodies())
def test_a_plain_body_is_read_as_werkzeug_reads_it(case: tuple[bytes, str]) -> None:
    body, boundary = case
    found = ours(body, boundary)
    event("read here" if found is not None else "left to werkzeug")
    if found is not None:
        assert found == werkzeug_form(body, boundary)


def test_what_clients_send_takes_the_short_way() -> None:
    """The plain shape is what real clients write: the comparison above is not vacuous."""
    payload = bytes(range(256)) * 600  # every byte value, CR and LF among them
    prepared = requests.Request(
        "POST",
        "http://x/",
        files={"liveness_data_file": ("c.pb", payload)},
        data={"return_image": "1"},
    ).prepare()
    boundary = str(prepared.headers["Content-Type"]).split("boundary=", 1)[1]
    assert isinstance(prepared.body, bytes)
    body = prepared.body
    found = ours(body, boundary)
    assert found is not None and found == werkzeug_form(body, boundary)
    fields, files = found
    assert fields == [("return_image", "1")] and files[0][3] == payload


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (
            b"preamble\r\n--B\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--B--",
            "preamble",
        ),
        (b"--B\nContent-Disposition: form-data; name=a\n\n1\n--B--", "LF alone"),
        (b"--B\r\nContent-Disposition: form-data; name=a\r\n\r\n1\n--B\r\n\r\n--B--", "LF --B"),
        (b"--B\r\nContent-Disposition: form-data;\r\n name=a\r\n\r\n1\r\n--B--", "folded"),
        (b"--B\r\nContent-Type: text/plain\r\n\r\n1\r\n--B--", "no disposition"),
        (b"--B\r\nContent-Disposition: form-data\r\n\r\n1\r\n--B--", "no name"),
        (b"--B\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--B--\r\nafter", "epilogue"),
        (b"--B\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--B", "unterminated"),
        (b"--B\r\nContent-Disposition: form-data; name=\xff\r\n\r\n1\r\n--B--", "not UTF-8"),
    ],
)
def test_anything_else_is_left_to_werkzeug(body: bytes, why: str) -> None:
    assert ours(body, "B") is None, why


def test_werkzeug_limits_stay_werkzeug_errors() -> None:
    part = b"--B\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n"
    too_many = part * (MAX_PARTS + 1) + b"--B--\r\n"
    assert ours(too_many, "B") is None
    assert werkzeug_form(too_many, "B") == "RequestEntityTooLarge"
    big = b"--B\r\nContent-Disposition: form-data; name=a\r\n\r\n" + b"x" * (MAX_FIELD + 1)
    big += b"\r\n--B--\r\n"
    assert ours(big, "B") is None
    assert werkzeug_form(big, "B") == "RequestEntityTooLarge"


def test_read_form_reads_the_body_once_either_way() -> None:
    """Through a real request object: the short way, and werkzeug's for a preamble."""
    from flask import Flask

    app = Flask(__name__)
    app.config.update(MAX_FORM_MEMORY_SIZE=MAX_FIELD, MAX_FORM_PARTS=MAX_PARTS)
    plain = b"--B\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n"
    plain += b'--B\r\nContent-Disposition: form-data; name=f; filename="c.pb"\r\n\r\nDATA\r\n'
    plain += b"--B--\r\n"
    for body in (plain, b"preamble\r\n" + plain):
        with app.test_request_context(
            "/", method="POST", data=body, content_type="multipart/form-data; boundary=B"
        ):
            from flask import request

            form, files = read_form(request)
            assert form.to_dict() == {"a": "1"} and files["f"].read() == b"DATA"


def test_overlapping_delimiters_are_found() -> None:
    """``bytes.count`` misses overlapping occurrences: such a boundary is left to werkzeug."""
    from itertools import product

    from antihack.api.form import _overlaps

    for n in range(1, 8):
        for chars in product(b"-a", repeat=n):
            delimiter = b"--" + bytes(chars)
            slow = any(delimiter.endswith(delimiter[:k]) for k in range(1, len(delimiter)))
            assert _overlaps(delimiter) == slow, delimiter
    assert not _overlaps(b"--" + b"-" * 24 + b"d74496d66958873e")  # curl's boundaries pass
