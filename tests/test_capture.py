"""The capture format: bindings, parsing limits, decoding, signatures, and make-sample."""

from __future__ import annotations

import hashlib
import hmac
import re
import struct
import tomllib
import tracemalloc
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from antihack.shared.cli.sample import make_sample
from antihack.shared.domain.capture import (
    DETECTION_FAILED,
    INVALID_ARGUMENT,
    CaptureError,
    CaptureLimits,
    capture_from_image,
    compute_signature,
    decode_frames,
    encode_jpeg,
    image_header,
    parse_capture,
    sign_capture,
    signing_payload,
    verify_signature,
)
from antihack.shared.proto import generate
from antihack.shared.proto import liveness_pb2 as pb
from antihack.shared.sdk.sample import build_capture
from tests.fixtures_images import astronaut, jittered, resized
from tests.helpers import png_bytes, png_with_header

ROOT = Path(__file__).resolve().parents[1]
LIMITS = CaptureLimits()
SECRET = b"sdk-secret-for-tests"


def capture_with_images(*images: bytes) -> bytes:
    capture = pb.Capture(version=1, session_id="s")
    for data in images:
        capture.frames.add(image=data)
    return capture.SerializeToString()


@pytest.fixture(scope="module")
def small_frames() -> list[np.ndarray]:
    return jittered(resized(astronaut(), 256), 3)


@pytest.fixture(scope="module")
def sample(small_frames: list[np.ndarray]) -> bytes:
    return build_capture(small_frames, challenge="BLINK", session_id="sess-1", start_ms=1_000)


# --- bindings -----------------------------------------------------------------------------


def test_bindings_match_the_proto(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools (dev dependency) regenerates them")
    for written in generate.generate(tmp_path):
        committed = generate.BINDINGS_DIR / written.name
        assert written.read_bytes() == committed.read_bytes(), (
            f"{committed} is stale: run python -m antihack.shared.proto.generate"
        )


def test_bindings_declare_the_runtime_floor_of_pyproject() -> None:
    # Older runtimes refuse newer gencode stamps: the stamp must not exceed what we depend on.
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    floor = next(re.fullmatch(r"protobuf>=([\d.]+)", d) for d in deps if d.startswith("protobuf"))
    assert floor is not None
    pinned = tuple(int(p) for p in floor.group(1).split("."))
    source = (generate.BINDINGS_DIR / "liveness_pb2.py").read_text()
    stamp = re.search(r"Domain\.PUBLIC,\s*(\d+),\s*(\d+),\s*(\d+),", source)
    assert stamp is not None
    assert tuple(int(g) for g in stamp.groups()) <= pinned + (0,) * (3 - len(pinned))


def test_version_stamp_is_lowered_only_when_newer() -> None:
    newer = (
        "_runtime_version.ValidateProtobufRuntimeVersion(\n"
        "    _runtime_version.Domain.PUBLIC,\n    7,\n    35,\n    1,\n"
    )
    older = newer.replace("7,\n    35,\n    1,", "5,\n    27,\n    0,")
    assert "5,\n    28,\n    0," in generate.lower_version_stamp(newer)
    assert generate.lower_version_stamp(older) == older
    with pytest.raises(RuntimeError):
        generate.lower_version_stamp("no stamp here")


# --- parsing ------------------------------------------------------------------------------


def test_roundtrip_keeps_every_field(sample: bytes) -> None:
    capture = parse_capture(sample, LIMITS)
    assert capture.version == 1
    assert capture.session_id == "sess-1"
    assert list(capture.challenges) == [pb.BLINK]
    assert [f.timestamp_ms for f in capture.frames] == [1_000, 1_067, 1_133]
    assert [f.best for f in capture.frames] == [False, True, False]
    assert all(f.challenge_step == pb.BLINK for f in capture.frames)
    assert pb.Capture.FromString(capture.SerializeToString(deterministic=True)) == capture


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        (b"", "empty"),
        (b"\x00" * 16, "not a valid capture"),
        (b"hello, this is not protobuf at all" * 3, "not a valid capture"),
        (bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8)), "not a valid"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 64, "is an image"),
    ],
)
def test_garbage_is_invalid_argument(payload: bytes, words: str) -> None:
    with pytest.raises(CaptureError) as err:
        parse_capture(payload, LIMITS)
    assert err.value.status == INVALID_ARGUMENT
    assert words in err.value.reason


def test_truncated_capture_is_invalid_argument(sample: bytes) -> None:
    for cut in (len(sample) // 2, len(sample) - 1, 7):
        with pytest.raises(CaptureError) as err:
            parse_capture(sample[:cut], LIMITS)
        assert err.value.status == INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda c: setattr(c, "version", 2), "version is 2"),
        (lambda c: c.ClearField("frames"), "no frames"),
        (lambda c: setattr(c, "session_id", "x" * 101), "session_id"),
        (lambda c: c.challenges.append(99), "challenge 99"),
        (lambda c: c.challenges.append(pb.CHALLENGE_UNSPECIFIED), "challenge 0"),
        (lambda c: setattr(c.frames[0], "image", b"GIF89a" + b"\x00" * 40), "neither JPEG nor PNG"),
        (lambda c: setattr(c.frames[1], "image", b""), "frame 1 is empty"),
    ],
)
def test_invalid_fields_are_refused(sample: bytes, edit: object, words: str) -> None:
    capture = pb.Capture.FromString(sample)
    edit(capture)  # type: ignore[operator]
    with pytest.raises(CaptureError) as err:
        parse_capture(capture.SerializeToString(), LIMITS)
    assert err.value.status == INVALID_ARGUMENT
    assert words in err.value.reason


def test_byte_and_frame_limits(sample: bytes) -> None:
    with pytest.raises(CaptureError, match="frames; the limit is 2"):
        parse_capture(sample, CaptureLimits(max_frames=2))
    with pytest.raises(CaptureError, match="bytes; the limit is 1000"):
        parse_capture(sample, CaptureLimits(max_bytes=1000))
    with pytest.raises(CaptureError, match="frame 0 is .* bytes; the limit"):
        parse_capture(sample, CaptureLimits(max_frame_bytes=1000))
    with pytest.raises(CaptureError, match="pixels in all"):
        parse_capture(sample, CaptureLimits(max_total_pixels=2 * 256 * 256))
    with pytest.raises(CaptureError, match="must be >= 300"):
        parse_capture(sample, CaptureLimits(min_side=300))


def test_huge_png_header_is_refused_without_allocating() -> None:
    # 20000 x 20000 RGB would be 1.2 GB decoded; the refusal must come from the header.
    huge = png_with_header(20_000, 20_000, zlib.compress(b"\x00" * 1024))
    payload = capture_with_images(huge)
    tracemalloc.start()
    try:
        with pytest.raises(CaptureError) as err:
            parse_capture(payload, LIMITS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert err.value.status == INVALID_ARGUMENT
    assert "20000x20000" in err.value.reason
    assert peak < 2_000_000


def test_decompression_bomb_is_refused_before_decoding() -> None:
    # 5000 x 5000 (25 Mpx, over the 16.7 Mpx limit) of zero rows squeezes into a few dozen KB.
    width, height = 5000, 5000
    packer = zlib.compressobj(9)
    row = b"\x00" * (1 + 3 * width)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    bomb = png_with_header(width, height, idat)
    assert len(bomb) < 200_000
    capture = pb.Capture(version=1)
    capture.frames.add(image=bomb)
    tracemalloc.start()
    try:
        with pytest.raises(CaptureError) as parse_err:
            parse_capture(capture.SerializeToString(), LIMITS)
        # decode_frames checks headers itself, for captures that did not come through parse.
        with pytest.raises(CaptureError) as decode_err:
            decode_frames(capture, LIMITS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert parse_err.value.status == INVALID_ARGUMENT
    assert "pixels" in parse_err.value.reason
    assert decode_err.value.status == INVALID_ARGUMENT
    assert peak < 2_000_000


def test_image_header_reads_jpeg_and_png_without_decoding() -> None:
    image = resized(astronaut(), 256)[:200]
    assert image_header(png_bytes(image)) == image_header(png_bytes(image))
    png = image_header(png_bytes(image))
    assert (png.kind, png.width, png.height) == ("png", 256, 200)
    jpeg = encode_jpeg(image)
    assert (image_header(jpeg).width, image_header(jpeg).height) == (256, 200)
    ok, progressive = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert ok
    assert image_header(progressive.tobytes()).width == 256
    # A big EXIF-like APP1 segment before the frame header is walked over, not parsed.
    app1 = b"\xff\xe1" + struct.pack(">H", 2 + 5000) + b"E" * 5000
    with_app1 = jpeg[:2] + app1 + jpeg[2:]
    assert image_header(with_app1).height == 200
    for broken in (jpeg[:20], jpeg[:2] + b"\xff\xda\x00\x02", b"\x89PNG\r\n\x1a\n" + b"\x00" * 30):
        with pytest.raises(CaptureError):
            image_header(broken)


# --- decoding -----------------------------------------------------------------------------


def test_decode_frames_returns_rgb(sample: bytes, small_frames: list[np.ndarray]) -> None:
    frames = decode_frames(parse_capture(sample, LIMITS), LIMITS)
    assert [f.shape for f in frames] == [(256, 256, 3)] * 3
    assert all(f.dtype == np.uint8 for f in frames)
    # JPEG at q90 stays close to the source, and in RGB order (a BGR mix-up moves the mean a lot).
    diff = np.abs(frames[0].astype(int) - small_frames[0].astype(int)).mean(axis=(0, 1))
    assert diff.max() < 6


def test_undecodable_frame_is_detection_failed() -> None:
    # A valid header over a corrupt pixel stream passes parsing and fails decoding.
    broken = png_with_header(64, 64, b"\x78\x9c" + b"\xde\xad\xbe\xef" * 50)
    capture = parse_capture(capture_with_images(broken), LIMITS)
    with pytest.raises(CaptureError) as err:
        decode_frames(capture, LIMITS)
    assert err.value.status == DETECTION_FAILED
    assert "frame 0" in err.value.reason


def test_capture_from_image_wraps_one_unsigned_frame() -> None:
    data = encode_jpeg(resized(astronaut(), 256))
    capture = capture_from_image(data, LIMITS)
    assert capture.version == 1 and not capture.signature
    assert len(capture.frames) == 1 and capture.frames[0].best
    assert capture.frames[0].image == data
    with pytest.raises(CaptureError) as err:
        capture_from_image(b"not an image", LIMITS)
    assert err.value.status == INVALID_ARGUMENT


# --- signatures ---------------------------------------------------------------------------


def test_sign_and_verify(sample: bytes) -> None:
    capture = parse_capture(sample, LIMITS)
    assert not verify_signature(capture, SECRET)
    sign_capture(capture, SECRET)
    assert len(capture.signature) == 32
    # The signature is HMAC-SHA256 over the deterministic serialization without it.
    unsigned = pb.Capture.FromString(sample)
    expected = hmac.new(SECRET, unsigned.SerializeToString(deterministic=True), hashlib.sha256)
    assert capture.signature == expected.digest()
    assert signing_payload(capture) == unsigned.SerializeToString(deterministic=True)
    received = parse_capture(capture.SerializeToString(), LIMITS)
    assert verify_signature(received, SECRET)
    assert not verify_signature(received, b"another secret")


@pytest.mark.parametrize(
    "tamper",
    [
        lambda c: setattr(c, "session_id", "other"),
        lambda c: setattr(c.frames[0], "timestamp_ms", c.frames[0].timestamp_ms + 1),
        lambda c: setattr(c.frames[1], "image", c.frames[2].image),
        lambda c: setattr(c.device, "is_emulator", True),
        lambda c: c.ClearField("challenges"),
    ],
)
def test_tampering_after_signing_breaks_the_signature(sample: bytes, tamper: object) -> None:
    capture = parse_capture(sample, LIMITS)
    sign_capture(capture, SECRET)
    tamper(capture)  # type: ignore[operator]
    assert not verify_signature(capture, SECRET)
    assert compute_signature(capture, SECRET) != capture.signature


# --- make-sample --------------------------------------------------------------------------


def test_make_sample_from_images(tmp_path: Path, small_frames: list[np.ndarray]) -> None:
    paths = []
    for i, frame in enumerate(small_frames):
        path = tmp_path / f"f{i}.png"
        path.write_bytes(png_bytes(frame))
        paths.append(str(path))
    out = tmp_path / "out.pb"
    result = CliRunner().invoke(
        make_sample,
        [
            *paths,
            "-o",
            str(out),
            "--challenge",
            "yaw",
            "--session-id",
            "abc",
            "--sign-secret",
            "s3",
        ],
    )
    assert result.exit_code == 0, result.output
    capture = parse_capture(out.read_bytes(), LIMITS)
    assert len(capture.frames) == 3
    assert list(capture.challenges) == [pb.YAW]
    assert capture.session_id == "abc"
    assert verify_signature(capture, b"s3")
    assert sum(f.best for f in capture.frames) == 1


def test_make_sample_from_a_video(tmp_path: Path) -> None:
    video = tmp_path / "clip.avi"
    frames = jittered(resized(astronaut(), 160), 24)
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"MJPG"), 12, (160, 160))
    assert writer.isOpened()
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    out = tmp_path / "clip.pb"
    result = CliRunner().invoke(make_sample, [str(video), "-o", str(out), "--frames", "5"])
    assert result.exit_code == 0, result.output
    capture = parse_capture(out.read_bytes(), LIMITS)
    assert len(capture.frames) == 5
    stamps = [f.timestamp_ms for f in capture.frames]
    assert stamps == sorted(stamps) and len(set(stamps)) == 5
    assert capture.session_id and not capture.signature
    decoded = decode_frames(capture, LIMITS)
    # Evenly sampled: the first and last picks are the clip's first and last frames.
    first = np.abs(decoded[0].astype(int) - frames[0].astype(int)).mean()
    last = np.abs(decoded[-1].astype(int) - frames[-1].astype(int)).mean()
    assert first < 8 and last < 8


def test_make_sample_help_and_bad_input(tmp_path: Path) -> None:
    runner = CliRunner()
    help_text = runner.invoke(make_sample, ["--help"]).output
    for option in ("--frames", "--challenge", "--session-id", "--sign-secret", "-o"):
        assert option in help_text
    junk = tmp_path / "junk.txt"
    junk.write_text("not media")
    result = runner.invoke(make_sample, [str(junk), str(junk), "-o", str(tmp_path / "x.pb")])
    assert result.exit_code != 0
    assert "not an image" in result.output


# --- fuzzing ------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_parse_capture_fuzz_raises_only_capture_error(data: bytes) -> None:
    try:
        parse_capture(data, LIMITS)
    except CaptureError as exc:
        assert exc.status == INVALID_ARGUMENT and exc.reason


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_parse_capture_fuzz_on_mutated_captures(sample: bytes, data: st.DataObject) -> None:
    mutated = bytearray(sample)
    # Half the edits hit the envelope (tags, lengths, first image headers), half anywhere.
    anywhere = st.one_of(st.integers(0, 400), st.integers(0, len(mutated) - 1))
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(anywhere)
        mutated[position] = data.draw(st.integers(0, 255))
    try:
        capture = parse_capture(bytes(mutated), LIMITS)
    except CaptureError as exc:
        assert exc.status == INVALID_ARGUMENT
    else:
        # Whatever got through must have sane headers; decoding may still fail, cleanly.
        try:
            decode_frames(capture, LIMITS)
        except CaptureError as exc:
            assert exc.status in (INVALID_ARGUMENT, DETECTION_FAILED)
