"""A submission's multipart form, read without werkzeug's parser when the body is plain.

werkzeug's multipart parser looks for the closing boundary with a regular expression tried at
every byte of the chunk that holds it (up to 64 KiB; about 20 µs per KiB) and copies each
chunk several times: for a 150 KiB capture it was the largest single cost of a submission.
Almost every client (curl, requests, browsers, the SDK) writes the same plain shape, which
:func:`plain_form` reads with a few ``bytes.find`` calls; any body it is not sure to read
exactly as werkzeug does goes to werkzeug's parser, whose answer (and errors: a part too many,
a text field too large) is then the answer. ``tests/test_form.py`` compares the two.
"""

from __future__ import annotations

import io
from typing import IO

from flask import Request
from werkzeug.datastructures import FileStorage, Headers, MultiDict
from werkzeug.formparser import FormDataParser
from werkzeug.http import parse_options_header

Form = tuple[MultiDict[str, str], MultiDict[str, FileStorage]]

# Field charsets werkzeug honours (MultiPartParser.get_part_charset); any other is UTF-8.
_CHARSETS = frozenset({"ascii", "us-ascii", "utf-8", "iso-8859-1"})
# Longer part headers go to werkzeug, which bounds them by MAX_FORM_MEMORY_SIZE.
_MAX_HEADER_BYTES = 8 * 1024
# werkzeug refuses (413) a body whose parser buffer passes MAX_FORM_MEMORY_SIZE: with its
# 64 KiB reads the buffer of a plain body stays under 128 KiB, so below this limit werkzeug
# decides.
_MIN_MEMORY_LIMIT = 256 * 1024


def read_form(request: Request) -> Form:
    """The form fields and files of a ``multipart/form-data`` request (its body is read)."""
    body = request.get_data(cache=False)
    options = request.mimetype_params
    found = plain_form(
        body,
        options.get("boundary", ""),
        max_parts=request.max_form_parts,
        max_field_bytes=request.max_form_memory_size,
    )
    if found is not None:
        return MultiDict(found[0]), MultiDict(found[1])
    parser = FormDataParser(
        stream_factory=_memory,
        max_form_memory_size=request.max_form_memory_size,
        max_content_length=request.max_content_length,
        cls=MultiDict,
        max_form_parts=request.max_form_parts,
    )
    _, form, files = parser.parse(io.BytesIO(body), request.mimetype, len(body), options)
    return form, files


def _memory(
    total_content_length: int | None,
    content_type: str | None,
    filename: str | None,
    content_length: int | None = None,
) -> IO[bytes]:
    # The body is in memory already (at most MAX_CONTENT_LENGTH): no temporary file for a part.
    return io.BytesIO()


def plain_form(
    body: bytes, boundary: str, *, max_parts: int | None, max_field_bytes: int | None
) -> tuple[list[tuple[str, str]], list[tuple[str, FileStorage]]] | None:
    """The fields and files of a plain multipart body, or None when it is not one.

    Plain: the body starts with the first delimiter; every delimiter is ``CRLF--boundary``
    followed by CRLF, or by ``--`` and at most a CRLF for the last; no other ``--boundary``
    occurs anywhere; each part's headers end at
    its first empty line, use CRLF only, are UTF-8 and are not folded; each part has a
    Content-Disposition; no limit of werkzeug's is reached. For such a body werkzeug's parser
    yields exactly these fields and files: its delimiter pattern can match nowhere else.
    """
    try:
        delimiter = b"--" + boundary.encode("ascii")
    except UnicodeEncodeError:
        return None
    if max_field_bytes is not None and max_field_bytes < _MIN_MEMORY_LIMIT:
        return None
    if not boundary or _overlaps(delimiter) or not body.startswith(delimiter + b"\r\n"):
        return None
    spans: list[tuple[int, int]] = []
    separator = b"\r\n" + delimiter
    start = len(delimiter) + 2
    while True:
        end = body.find(separator, start)
        if end < 0:
            return None
        spans.append((start, end))
        after = end + len(separator)
        tail = body[after : after + 2]
        if tail == b"--":
            if body[after + 2 :] not in (b"", b"\r\n"):
                return None  # an epilogue: werkzeug buffers it, against its memory limit
            break
        if tail != b"\r\n":
            return None
        start = after + 2
    if body.count(delimiter) != len(spans) + 1:
        return None  # another "--boundary": maybe a delimiter to werkzeug (after a CR or LF)
    if max_parts is not None and len(spans) > max_parts:
        return None
    fields: list[tuple[str, str]] = []
    files: list[tuple[str, FileStorage]] = []
    for start, end in spans:
        part = _part(body, start, end, max_field_bytes)
        if part is None:
            return None
        name, filename, headers, data = part
        if filename is None:
            fields.append((name, data.decode(_charset(headers), "replace")))
        else:
            stream = io.BytesIO(data)
            files.append((name, FileStorage(stream, filename, name, headers=headers)))
    return fields, files


def _overlaps(delimiter: bytes) -> bool:
    """Whether two occurrences of ``delimiter`` can overlap, which ``bytes.count`` would miss:
    one may start ``i`` bytes into another when the delimiter starts with its own tail from
    ``i``, which then begins with a dash, as the delimiter does."""
    i = delimiter.find(b"-", 1)
    while i >= 0:
        if delimiter.startswith(delimiter[i:]):
            return True
        i = delimiter.find(b"-", i + 1)
    return False


def _part(
    body: bytes, start: int, end: int, max_field_bytes: int | None
) -> tuple[str, str | None, Headers, bytes] | None:
    head_end = body.find(b"\r\n\r\n", start, end)
    if head_end < 0 or head_end - start > _MAX_HEADER_BYTES:
        return None
    head = body[start:head_end]
    crlf = head.count(b"\r\n")
    if head.count(b"\r") != crlf or head.count(b"\n") != crlf:
        return None  # a bare CR or LF: werkzeug may end the headers there
    lines = head.split(b"\r\n")
    if any(line[:1] in (b" ", b"\t") for line in lines[1:]):
        return None  # a folded header
    pairs = []
    for line in lines:
        line = line.strip(b" \t")
        if not line:
            continue
        try:
            key, _, value = line.decode().partition(":")
        except UnicodeDecodeError:
            return None
        pairs.append((key.strip(" \t"), value.strip(" \t")))
    headers = Headers(pairs)
    if "content-disposition" not in headers:
        return None
    _, extra = parse_options_header(headers["content-disposition"])
    name, filename = extra.get("name"), extra.get("filename")
    data = body[head_end + 4 : end]
    if name is None:
        return None  # werkzeug keeps the part under the key None
    if filename is None and max_field_bytes is not None and len(data) > max_field_bytes:
        return None
    return name, filename, headers, data


def _charset(headers: Headers) -> str:
    content_type = headers.get("content-type")
    if content_type:
        charset = parse_options_header(content_type)[1].get("charset", "").lower()
        if charset in _CHARSETS:
            return charset
    return "utf-8"
