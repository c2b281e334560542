"""Parse, bound-check, decode and sign liveness captures (``proto/liveness.proto``).

The API calls :func:`parse_capture` at submission and the worker calls it again before the
pipeline; every check here is cheap (image headers are read, never decoded) and none needs the
key, so a malformed upload is refused before a job exists.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from antihack.shared.choices import CHALLENGES
from antihack.shared.proto import liveness_pb2 as pb

Capture = pb.Capture
Frame = pb.Frame

CAPTURE_VERSION = 1
INVALID_ARGUMENT = "INVALID_ARGUMENT"
DETECTION_FAILED = "DETETION_FAILED"  # the seed's spelling
ImageKind = Literal["jpeg", "png"]
RgbImage = NDArray[np.uint8]

# Text fields are stored (session ids for replay detection, fingerprints are 100 chars wide) and
# echoed in logs, so bound them; a UUID needs 36.
MAX_ID_CHARS = 100
MAX_CHALLENGES = 8
# Real JPEGs put their frame header after < 20 segments; a bound keeps the header walk O(1).
MAX_JPEG_SEGMENTS = 256

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8"
# Start-of-frame markers: baseline, extended, progressive, lossless, hierarchical, arithmetic.
_JPEG_SOF = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
)
# Markers without a length field: TEM and the restart markers.
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
# Length-bearing markers libjpeg reads (or skips) before a frame header: DHT, DAC, DQT, DNL,
# DRI, APP0-15 and COM. Any other marker there is an error to libjpeg, and so to us.
_JPEG_BEFORE_SOF = frozenset({0xC4, 0xCC, 0xDB, 0xDC, 0xDD, *range(0xE0, 0xF0), 0xFE})
# Only challenges the pipeline knows how to observe are accepted.
_KNOWN_CHALLENGES = frozenset(pb.Challenge.Value(name) for name in CHALLENGES)
# A step prompt's time is Unix epoch ms: before 2100-01-01 (a sane client clock).
MAX_EPOCH_MS = 4_102_444_800_000


@dataclass(frozen=True)
class CaptureLimits:
    """Bounds on what a capture may hold; the worker decodes at most ``max_total_pixels``."""

    max_bytes: int = 10 * 1024 * 1024
    max_frames: int = 64
    max_frame_bytes: int = 8 * 1024 * 1024
    max_pixels_per_frame: int = 16_777_216
    max_side: int = 8192
    # Below this nothing can be detected (the face detector's input is 128 px); small-but-usable
    # frames are accepted and reported by the pipeline as image_too_small.
    min_side: int = 32
    # 64 frames of 4096x4096 fit in 10 MiB when they compress well and would decode to 3 GiB;
    # this caps a job's decoded frames at about 300 MB.
    max_total_pixels: int = 100_000_000


class CaptureError(Exception):
    """A capture the service cannot use; ``status`` is the seed's status string."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class ImageHeader:
    """What an image's header declares, read without decoding it."""

    kind: ImageKind
    width: int
    height: int


def _invalid(reason: str) -> CaptureError:
    return CaptureError(INVALID_ARGUMENT, reason)


def _png_header(data: bytes) -> ImageHeader:
    # The PNG spec requires IHDR (13 bytes of data) to be the first chunk.
    if len(data) < 33:
        raise _invalid("PNG image is truncated before its IHDR header")
    length, chunk = struct.unpack(">I4s", data[8:16])
    if chunk != b"IHDR" or length != 13:
        raise _invalid("PNG image does not start with an IHDR header")
    width, height = struct.unpack(">II", data[16:24])
    return ImageHeader("png", width, height)


def _jpeg_header(data: bytes) -> ImageHeader:
    """The size in the frame header libjpeg will read, or INVALID_ARGUMENT.

    libjpeg skips any bytes between segments that are not a marker, ``FF 00`` included, and
    takes the first frame header it meets; a walk that skipped differently (``FF 00 LL LL`` read
    as a segment with a length) would read a different, small frame header than the decoder,
    and a 700-byte file would decode to 134 Mpx. So this walk reads exactly what libjpeg reads
    and refuses whatever libjpeg would skip or stop at: then the two cannot disagree.
    """
    i, n = 2, len(data)
    for _ in range(MAX_JPEG_SEGMENTS):
        if i >= n:
            break
        if data[i] != 0xFF:
            raise _invalid(f"JPEG image has stray bytes between segments (offset {i})")
        while i < n and data[i] == 0xFF:  # fill bytes may pad any marker
            i += 1
        if i >= n:
            break
        marker = data[i]
        i += 1
        if marker in _JPEG_STANDALONE:
            continue
        if marker not in _JPEG_SOF and marker not in _JPEG_BEFORE_SOF:
            raise _invalid(
                f"JPEG image has marker FF{marker:02X} where a segment before its frame header "
                f"belongs (offset {i - 2})"
            )
        if i + 2 > n:
            break
        seg_len = (data[i] << 8) | data[i + 1]
        if seg_len < 2:
            raise _invalid("JPEG image has a malformed segment")
        if marker in _JPEG_SOF:
            if seg_len < 8 or i + 7 > n:
                break
            height, width = struct.unpack(">HH", data[i + 3 : i + 7])
            return ImageHeader("jpeg", width, height)
        i += seg_len
    else:
        raise _invalid(f"JPEG image has more than {MAX_JPEG_SEGMENTS} segments before its header")
    raise _invalid("JPEG image is truncated or corrupt before its frame header")


def image_header(data: bytes) -> ImageHeader:
    """Read an image's format and size from its header; raise INVALID_ARGUMENT if not JPEG/PNG."""
    if data.startswith(_PNG_SIGNATURE):
        return _png_header(data)
    if data.startswith(_JPEG_SOI):
        return _jpeg_header(data)
    raise _invalid("image is neither JPEG nor PNG")


def check_image(data: bytes, limits: CaptureLimits, what: str = "image") -> ImageHeader:
    """Check an encoded image's byte size and declared dimensions against ``limits``."""
    if not data:
        raise _invalid(f"{what} is empty")
    if len(data) > limits.max_frame_bytes:
        raise _invalid(f"{what} is {len(data)} bytes; the limit is {limits.max_frame_bytes}")
    try:
        header = image_header(data)
    except CaptureError as exc:
        raise _invalid(f"{what}: {exc.reason}") from None
    _check_size(header.width, header.height, limits, what)
    return header


def _check_size(width: int, height: int, limits: CaptureLimits, what: str) -> None:
    if min(width, height) < limits.min_side:
        raise _invalid(f"{what} is {width}x{height} px; each side must be >= {limits.min_side}")
    if max(width, height) > limits.max_side:
        raise _invalid(f"{what} is {width}x{height} px; each side must be <= {limits.max_side}")
    if width * height > limits.max_pixels_per_frame:
        raise _invalid(
            f"{what} is {width}x{height} px; the limit is {limits.max_pixels_per_frame} pixels"
        )


def _check_text(value: str, field: str) -> None:
    if len(value) > MAX_ID_CHARS:
        raise _invalid(f"{field} is {len(value)} characters; the limit is {MAX_ID_CHARS}")


def validate_capture(capture: pb.Capture, limits: CaptureLimits) -> None:
    """Check a parsed capture's fields and frame headers; raise INVALID_ARGUMENT on a fault."""
    if capture.version != CAPTURE_VERSION:
        raise _invalid(
            f"capture version is {capture.version}; this server reads version {CAPTURE_VERSION}"
        )
    for field in ("session_id", "sdk_version", "session_nonce"):
        _check_text(getattr(capture, field), field)
    _check_text(capture.device.model, "device.model")
    _check_text(capture.device.os_version, "device.os_version")
    if len(capture.challenges) > MAX_CHALLENGES:
        raise _invalid(
            f"capture asks for {len(capture.challenges)} challenges; at most {MAX_CHALLENGES}"
        )
    for value in capture.challenges:
        if value not in _KNOWN_CHALLENGES:
            raise _invalid(f"challenge {value} is not a known challenge step")
    if len(capture.prompts) > MAX_CHALLENGES:
        raise _invalid(f"capture has {len(capture.prompts)} step prompts; at most {MAX_CHALLENGES}")
    for index, prompt in enumerate(capture.prompts):
        if prompt.step not in _KNOWN_CHALLENGES:
            raise _invalid(f"prompt {index} has unknown step {prompt.step}")
        if not 0 < prompt.shown_at_ms < MAX_EPOCH_MS:
            raise _invalid(f"prompt {index} has shown_at_ms {prompt.shown_at_ms}; not a time")
    if not capture.frames:
        raise _invalid("capture has no frames")
    if len(capture.frames) > limits.max_frames:
        raise _invalid(
            f"capture has {len(capture.frames)} frames; the limit is {limits.max_frames}"
        )
    total = 0
    for index, frame in enumerate(capture.frames):
        header = check_image(frame.image, limits, f"frame {index}")
        total += header.width * header.height
        if frame.challenge_step and frame.challenge_step not in _KNOWN_CHALLENGES:
            raise _invalid(f"frame {index} has unknown challenge_step {frame.challenge_step}")
    if total > limits.max_total_pixels:
        raise _invalid(f"frames hold {total} pixels in all; the limit is {limits.max_total_pixels}")


# Field numbers of Capture's repeated fields (proto/liveness.proto).
_FIELD_CHALLENGES, _FIELD_FRAMES = 7, 8
# Besides its frames and challenges a capture has 8 singular fields; room for a few unknown ones
# (a newer SDK) on top.
_MAX_OTHER_FIELDS = 32
_MAX_VARINT_BYTES = 10


def _garbage() -> CaptureError:
    return _invalid("liveness data is not a valid capture protobuf (garbage or truncated)")


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = 0
    for shift in range(0, 7 * _MAX_VARINT_BYTES, 7):
        if i >= len(data):
            break
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
    raise _garbage()


def check_wire_counts(data: bytes, limits: CaptureLimits) -> None:
    """Count a capture's top-level fields on the wire, before protobuf builds them.

    The parser materialises every element of a repeated field before ``validate_capture`` can
    refuse their number: 10 MiB of empty frames are 5 million messages (~280 MB), 10 MiB of
    packed challenges 10 million values. This walk reads only tags and lengths, stops at the
    first field over a limit, and never looks at more than ``max_frames + MAX_CHALLENGES + 32``
    fields; anything that is not protobuf's wire format (including groups, which proto3 never
    writes) is refused as garbage.
    """
    max_fields = limits.max_frames + MAX_CHALLENGES + _MAX_OTHER_FIELDS
    frames = challenges = fields = 0
    i, n = 0, len(data)
    while i < n:
        fields += 1
        if fields > max_fields:
            raise _invalid(f"capture has more than {max_fields} top-level fields")
        tag, i = _varint(data, i)
        number, wire_type = tag >> 3, tag & 7
        if number == 0:
            raise _garbage()
        if wire_type == 0:
            _, i = _varint(data, i)
            challenges += number == _FIELD_CHALLENGES
        elif wire_type == 1:
            i += 8
        elif wire_type == 5:
            i += 4
        elif wire_type == 2:
            length, i = _varint(data, i)
            if number == _FIELD_FRAMES:
                frames += 1
            elif number == _FIELD_CHALLENGES:  # packed: one varint per value
                if length > MAX_CHALLENGES * _MAX_VARINT_BYTES:
                    challenges += MAX_CHALLENGES + 1
                else:
                    challenges += sum(1 for b in data[i : i + length] if b < 0x80)
            i += length
        else:  # groups (3, 4) or an invalid wire type
            raise _garbage()
        if i > n:
            raise _garbage()
        if frames > limits.max_frames:
            raise _invalid(
                f"capture has more than {limits.max_frames} frames; "
                f"the limit is {limits.max_frames}"
            )
        if challenges > MAX_CHALLENGES:
            raise _invalid(f"capture asks for more than {MAX_CHALLENGES} challenges")


def parse_capture(data: bytes, limits: CaptureLimits) -> pb.Capture:
    """Parse and bound-check a serialized capture; raise CaptureError(INVALID_ARGUMENT)."""
    if not data:
        raise _invalid("liveness data is empty")
    if len(data) > limits.max_bytes:
        raise _invalid(f"liveness data is {len(data)} bytes; the limit is {limits.max_bytes}")
    if data.startswith((_PNG_SIGNATURE, _JPEG_SOI)):
        raise _invalid(
            "liveness data is an image, not a capture; wrap it with `antihack make-sample` "
            "or upload it with POST /face/liveness_image and pass image_id"
        )
    check_wire_counts(data, limits)
    capture = pb.Capture()
    try:
        capture.ParseFromString(data)
    except Exception:  # DecodeError, and whatever else a parser implementation raises
        raise _garbage() from None
    validate_capture(capture, limits)
    return capture


def capture_from_image(image_bytes: bytes, limits: CaptureLimits) -> pb.Capture:
    """Wrap one uploaded image (the H5 ``image_id`` flow) into an unsigned one-frame capture."""
    check_image(image_bytes, limits)
    capture = pb.Capture(version=CAPTURE_VERSION)
    capture.frames.add(image=image_bytes, best=True)
    validate_capture(capture, limits)
    return capture


def decode_frames(capture: pb.Capture, limits: CaptureLimits) -> list[RgbImage]:
    """Decode every frame to RGB uint8; an undecodable image raises DETETION_FAILED."""
    import cv2  # here, not at the top: the API validates captures and never decodes frames

    frames: list[RgbImage] = []
    total = 0
    for index, frame in enumerate(capture.frames):
        what = f"frame {index}"
        check_image(frame.image, limits, what)  # the capture may not have come through parse
        buffer = np.frombuffer(frame.image, dtype=np.uint8)
        try:
            bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
        except cv2.error:
            bgr = None
        if bgr is None or bgr.ndim != 3 or bgr.shape[2] != 3:
            raise CaptureError(DETECTION_FAILED, f"{what} could not be decoded as JPEG or PNG")
        height, width = bgr.shape[:2]
        # EXIF rotation may swap sides, and a lying header is caught only here.
        try:
            _check_size(width, height, limits, what)
        except CaptureError as exc:
            raise CaptureError(DETECTION_FAILED, exc.reason) from None
        total += width * height
        if total > limits.max_total_pixels:
            raise CaptureError(
                DETECTION_FAILED, f"frames decode to more than {limits.max_total_pixels} pixels"
            )
        frames.append(np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8))
    return frames


def signing_payload(capture: pb.Capture) -> bytes:
    """The bytes the signature covers: the capture serialized deterministically, signature empty."""
    unsigned = pb.Capture()
    unsigned.CopyFrom(capture)
    unsigned.ClearField("signature")
    return unsigned.SerializeToString(deterministic=True)


def compute_signature(capture: pb.Capture, secret: bytes) -> bytes:
    """HMAC-SHA256 of :func:`signing_payload` keyed by the API key's SDK secret."""
    return hmac.new(secret, signing_payload(capture), hashlib.sha256).digest()


def sign_capture(capture: pb.Capture, secret: bytes) -> None:
    """Set ``capture.signature`` in place."""
    capture.signature = compute_signature(capture, secret)


def verify_signature(capture: pb.Capture, secret: bytes) -> bool:
    """True when the capture carries a signature made with ``secret`` (constant-time compare)."""
    if not capture.signature:
        return False
    return hmac.compare_digest(capture.signature, compute_signature(capture, secret))


def encode_jpeg(image: NDArray[np.uint8], quality: int = 90) -> bytes:
    """Encode an RGB uint8 image as a frame's JPEG (the worker's best image, the capture kit).

    OpenCV is imported here, on first use: the API imports this module and never loads it."""
    import cv2

    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("the image could not be encoded as JPEG")
    return bytes(buf.tobytes())
