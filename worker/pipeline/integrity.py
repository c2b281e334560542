"""Integrity of a capture's envelope: signature, timestamps, frame count, device flags, and
the capture session check made at submission."""

from __future__ import annotations

from antihack.shared.domain.capture import verify_signature
from antihack.shared.domain.capture_sessions import CAPTURE_SESSION_CHECKS
from antihack.shared.proto import liveness_pb2 as pb
from antihack.worker.pipeline.fusion import CERTAIN, STRONG, WEAK, Signal

# Clocks of phones and servers disagree by seconds, rarely minutes.
MAX_CLOCK_SKEW_MS = 5 * 60 * 1000
# Captures are submitted right after recording; a day covers offline queues and retries.
MAX_CAPTURE_AGE_MS = 24 * 3600 * 1000
# A liveness capture lasts a few seconds; two minutes of frames is not one.
MAX_SPAN_MS = 2 * 60 * 1000
# Frames are stamped started_at + monotonic elapsed time, so none may precede the start.
START_TOLERANCE_MS = 1000
# Observing an action (eyes open, closed, open again) needs a few frames per challenge.
MIN_FRAMES_PER_CHALLENGE = 3


def signature_signals(
    capture: pb.Capture, require_signed: bool, sdk_secret: bytes | None
) -> list[Signal]:
    """A present signature must verify; a missing one is a hack only when the key requires it."""
    if not capture.signature:
        if require_signed:
            return [Signal("signature_missing", CERTAIN, "this key accepts signed captures only")]
        return []
    if sdk_secret is None:
        if require_signed:
            return [Signal("signature_unverifiable", CERTAIN, "the key has no SDK secret")]
        return []
    if not verify_signature(capture, sdk_secret):
        # Made with another secret or altered after signing: either way not what the SDK sent.
        return [Signal("signature_invalid", CERTAIN, "signature does not match the capture")]
    return []


def timestamp_signals(capture: pb.Capture, now_ms: int) -> list[Signal]:
    """Frame times must not go backwards, precede the start, lie in the future or be stale."""
    signals: list[Signal] = []
    stamps = [f.timestamp_ms for f in capture.frames if f.timestamp_ms]
    if stamps and len(stamps) != len(capture.frames):
        signals.append(Signal("timestamps_partial", WEAK, "some frames have no timestamp"))
    if any(b < a for a, b in zip(stamps, stamps[1:], strict=False)):
        signals.append(Signal("timestamps_not_monotonic", CERTAIN, "frame timestamps go backwards"))
    if stamps:
        span = max(stamps) - min(stamps)
        if span > MAX_SPAN_MS:
            signals.append(Signal("timestamps_span_implausible", STRONG, f"frames span {span} ms"))
        if len(stamps) >= 3 and span == 0:
            signals.append(Signal("timestamps_flat", WEAK, "all frames carry the same timestamp"))
    times = [*stamps, capture.started_at_ms] if capture.started_at_ms else stamps
    if times and max(times) > now_ms + MAX_CLOCK_SKEW_MS:
        signals.append(
            Signal("timestamp_in_future", STRONG, f"{max(times) - now_ms} ms ahead of the server")
        )
    start = capture.started_at_ms
    if start:
        if now_ms - start > MAX_CAPTURE_AGE_MS:
            signals.append(
                Signal("capture_too_old", STRONG, f"started {(now_ms - start) // 1000} s ago")
            )
        if stamps and min(stamps) < start - START_TOLERANCE_MS:
            signals.append(Signal("frame_before_start", STRONG, "a frame precedes started_at_ms"))
    return signals


def device_signals(capture: pb.Capture) -> list[Signal]:
    """Flags the SDK reports about its device."""
    device = capture.device
    signals: list[Signal] = []
    if device.is_emulator:
        signals.append(Signal("emulator", STRONG, "captured on an emulator"))
    if device.virtual_camera:
        signals.append(Signal("virtual_camera", STRONG, "the camera is a virtual device"))
    if device.is_rooted:
        # Many genuine users root their phones; it only makes injection easier.
        signals.append(Signal("rooted_device", WEAK, "the device is rooted or jailbroken"))
    return signals


def session_signals(session_check: str | None) -> list[Signal]:
    """A failed capture session check (decided when the job was created) is certain: the
    capture was not recorded for a live capture session of this key, or not as it asked."""
    if not session_check:
        return []
    detail = CAPTURE_SESSION_CHECKS.get(session_check, "the capture session check failed")
    return [Signal(session_check, CERTAIN, detail)]


def integrity_signals(
    capture: pb.Capture, *, require_signed: bool, sdk_secret: bytes | None, now_ms: int
) -> list[Signal]:
    """All envelope checks of a parsed capture."""
    signals = signature_signals(capture, require_signed, sdk_secret)
    signals += timestamp_signals(capture, now_ms)
    needed = MIN_FRAMES_PER_CHALLENGE * len(capture.challenges)
    if len(capture.frames) < needed:
        signals.append(
            Signal(
                "too_few_frames",
                CERTAIN,
                f"{len(capture.frames)} frames cannot show {len(capture.challenges)} challenge(s)",
            )
        )
    signals += device_signals(capture)
    return signals
