"""Pure pipeline stages on real images and hand-made inputs: no model is loaded here."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from antihack.shared.domain.capture import encode_jpeg, sign_capture
from antihack.shared.proto import liveness_pb2 as pb
from antihack.worker.pipeline import challenges, crossframe, fusion, integrity, quality, replay
from antihack.worker.pipeline.fusion import CERTAIN, STRONG, WEAK, FusionInput, Signal, fuse
from tests.fixtures_images import astronaut, blurred, coffee, darkened, jittered, resized

# BlazeFace's box on astronaut() (x0, y0, x1, y1), as detect_faces returns it.
ASTRONAUT_FACE = (178.0, 81.0, 272.0, 175.0)
NOW_MS = 1_800_000_000_000


def scaled_box(factor: float) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = ASTRONAUT_FACE
    return (x0 * factor, y0 * factor, x1 * factor, y1 * factor)


# --- quality ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "image", "box", "flags"),
    [
        ("sharp", astronaut(), ASTRONAUT_FACE, (False, False, False, False)),
        ("blurred", blurred(astronaut()), ASTRONAUT_FACE, (True, False, False, True)),
        ("dark", darkened(astronaut()), ASTRONAUT_FACE, (True, False, False, True)),
        (
            "face 55 px",
            resized(astronaut(), 300),
            scaled_box(300 / 512),
            (False, True, False, True),
        ),
        (
            "image 200 px",
            resized(astronaut(), 200),
            scaled_box(200 / 512),
            (True, True, True, True),
        ),
    ],
)
def test_quality_flags(
    name: str,
    image: np.ndarray,
    box: tuple[float, float, float, float],
    flags: tuple[bool, bool, bool, bool],
) -> None:
    report = quality.frame_quality(image, box, face_prob=1.0)
    got = (
        report.blur_or_dark,
        report.face_too_small,
        report.image_too_small,
        report.quality_too_low,
    )
    assert got == flags, (name, report.measures)
    assert 0.0 <= report.quality_score <= 1.0
    assert 0.0 <= report.face_quality_score <= 1.0
    assert report.usable == (not any(flags)), name


def test_quality_measures_on_real_face_sit_in_the_measured_ranges() -> None:
    sharp = quality.measure(astronaut(), ASTRONAUT_FACE, 1.0)
    soft = quality.measure(blurred(astronaut()), ASTRONAUT_FACE, 1.0)
    dark = quality.measure(darkened(astronaut()), ASTRONAUT_FACE, 1.0)
    # MODELS.md: real 198-521 (astronaut is a scanned print of a real face, a little below),
    # blurred 3-13; brightness real 113-158 and dark 25-40.
    assert 150 < sharp.laplacian_var < 521
    assert 3 < soft.laplacian_var < 13
    assert 113 < sharp.brightness < 170
    assert 25 < dark.brightness < 40
    assert sharp.face_px == pytest.approx(94.0)


def test_face_quality_follows_the_mesh_face_probability() -> None:
    confident = quality.frame_quality(astronaut(), ASTRONAUT_FACE, face_prob=1.0)
    doubtful = quality.frame_quality(astronaut(), ASTRONAUT_FACE, face_prob=0.3)
    assert confident.face_quality_score > 0.5 > doubtful.face_quality_score
    assert doubtful.face_quality_low and not confident.face_quality_low
    no_face = quality.frame_quality(coffee(), None)
    assert no_face.face_quality_score == 0.0 and no_face.quality_score == 0.0
    assert not no_face.face_too_small


# --- cross-frame --------------------------------------------------------------------------


def codes(signals: tuple[Signal, ...] | list[Signal]) -> list[str]:
    return [s.code for s in signals]


def report_for(frames: list[np.ndarray]) -> crossframe.CrossFrameReport:
    return crossframe.crossframe_report(frames)


def test_identical_frames_are_a_still_image() -> None:
    still = report_for([astronaut()] * 5)
    assert codes(still.signals) == ["still_image_injected"]
    assert still.signals[0].severity == CERTAIN
    assert still.static_pairs == 4 and still.motion_energy == 0.0


def test_near_identical_frames_count_as_identical() -> None:
    # One JPEG decode per frame, +-1 level of rounding noise, as a still re-encoded would give.
    base = astronaut().astype(np.int16)
    wobble = np.random.default_rng(3).integers(-1, 2, base.shape)
    frames = [astronaut(), np.clip(base + wobble, 0, 255).astype(np.uint8), astronaut()]
    assert codes(report_for(frames).signals) == ["still_image_injected"]


def test_two_identical_frames_are_strong_and_some_repeats_weak() -> None:
    pair = report_for([astronaut(), astronaut()])
    assert [(s.code, s.severity) for s in pair.signals] == [("frames_identical", STRONG)]
    moving = jittered(astronaut(), 2)
    repeated = report_for([moving[0]] * 4 + [moving[1]])
    assert [(s.code, s.severity) for s in repeated.signals] == [("frames_repeated", WEAK)]


def test_a_moving_camera_raises_nothing() -> None:
    report = report_for(jittered(astronaut(), 5))
    assert report.signals == ()
    assert report.static_pairs == 0
    assert report.motion_energy > 1.0


# --- challenge steps (worker/pipeline/challenges.py) ------------------------------------------


def mesh(
    nose: tuple[float, float] = (150, 150), lower_lip_y: float = 202, dx: float = 0.0
) -> np.ndarray:
    """A frontal face's key FaceMesh points: eyes 100 px apart, mouth 100 px below them."""
    points = np.zeros((468, 3), dtype=np.float32)
    points[:, 0] = np.linspace(90, 210, 468) + dx  # the rest of the face, 120 px wide
    points[:, 1] = np.linspace(60, 240, 468)
    points[challenges.EYE_OUTER_LEFT, :2] = (100 + dx, 100)
    points[challenges.EYE_OUTER_RIGHT, :2] = (200 + dx, 100)
    points[challenges.NOSE_TIP, :2] = (nose[0] + dx, nose[1])
    points[challenges.MOUTH_LEFT, :2] = (125 + dx, 200)
    points[challenges.MOUTH_RIGHT, :2] = (175 + dx, 200)
    points[challenges.UPPER_LIP, :2] = (150 + dx, 198)
    points[challenges.LOWER_LIP, :2] = (150 + dx, lower_lip_y)
    return points


def judge(
    names: list[str],
    meshes: list[np.ndarray | None],
    ears: list[float | None] | None = None,
    steps: list[str | None] | None = None,
) -> challenges.ChallengeReport:
    n = len(meshes)
    frames = [
        challenges.FrameInput(NOW_MS + 66 * i, (steps or [None] * n)[i], m, (ears or [None] * n)[i])
        for i, m in enumerate(meshes)
    ]
    return challenges.judge_challenges(names, frames)


@pytest.mark.parametrize(
    ("ears", "seen"),
    [
        ([0.3, 0.31, 0.08, 0.29], True),
        ([None, 0.3, None, 0.09, 0.3], True),
        ([0.3, 0.31, 0.08], False),  # eyes never reopen
        ([0.08, 0.3, 0.3], False),  # closed first, never closed again
        ([0.3] * 6, False),
        ([0.13, 0.11, 0.12], False),  # never clearly open
        ([0.4, 0.42, 0.3, 0.41, 0.4], False),  # a squint, not a blink: 0.3 is 0.73 of open
        ([0.2, 0.21, 0.11, 0.2, 0.2], True),  # narrow eyes: the dip is relative to their own
    ],
)
def test_blink_is_a_dip_below_the_capture_own_open_eyes(
    ears: list[float | None], seen: bool
) -> None:
    meshes: list[np.ndarray | None] = [mesh(dx=0.5 * i) for i in range(len(ears))]
    assert judge(["BLINK"], meshes, ears).observed == {"BLINK": seen}


def test_two_stills_alternated_are_not_a_blink() -> None:
    # Open, closed, open: the open frames are the same picture (same mesh to the decimal).
    meshes: list[np.ndarray | None] = [mesh(), mesh(dx=0.7), mesh()]
    assert judge(["BLINK"], meshes, [0.3, 0.08, 0.3]).observed == {"BLINK": False}


def test_legacy_pose_measures_of_a_frontal_face() -> None:
    mouth, yaw, pitch = challenges.pose_measures_2d(mesh()[:, :2].astype(np.float64))
    assert yaw == pytest.approx(0.0)
    assert pitch == pytest.approx(0.5)
    assert mouth == pytest.approx(4 / 50)


@pytest.mark.parametrize(
    ("challenge", "performed", "still"),
    [
        ("YAW", [mesh(), mesh((165, 150)), mesh((180, 150))], [mesh(), mesh((155, 150))]),
        ("NOD", [mesh(), mesh((150, 160)), mesh((150, 170))], [mesh(), mesh((150, 154))]),
        ("MOUTH", [mesh(), mesh(lower_lip_y=230)], [mesh(), mesh(lower_lip_y=206)]),
    ],
)
def test_legacy_head_and_mouth_challenges(
    challenge: str, performed: list[np.ndarray | None], still: list[np.ndarray | None]
) -> None:
    assert judge([challenge], performed).observed == {challenge: True}
    assert judge([challenge], performed).signals == ()
    failed = judge([challenge], still)
    assert failed.observed == {challenge: False}
    assert [(s.code, s.severity) for s in failed.signals] == [("challenge_not_met", CERTAIN)]
    assert [f["step"] for f in failed.failed_steps] == [challenge]


def test_challenges_are_judged_on_their_marked_frames() -> None:
    ears: list[float | None] = [0.3, 0.08, 0.3, 0.3]
    meshes: list[np.ndarray | None] = [mesh(), mesh(dx=0.5), mesh((180, 150), dx=1), mesh(dx=1.5)]
    # The blink happened during the YAW step, not the BLINK step: BLINK is not met.
    steps: list[str | None] = ["YAW", "YAW", "BLINK", "BLINK"]
    assert judge(["BLINK", "YAW"], meshes, ears, steps).observed == {"BLINK": False, "YAW": False}
    assert judge(["BLINK", "YAW"], meshes, ears).observed == {"BLINK": True, "YAW": True}


# --- replay -------------------------------------------------------------------------------


def decode(data: bytes) -> np.ndarray:
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), 1)
    assert bgr is not None, "not an image"
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def test_phash_distances() -> None:
    original = replay.phash(astronaut())
    assert 0 <= original < 2**64
    reencoded = replay.phash(decode(encode_jpeg(astronaut(), 60)))
    other = replay.phash(coffee())
    assert replay.hamming(original, reencoded) <= 2
    assert replay.hamming(original, other) > 20
    # Hashes stored as signed 64-bit integers compare the same.
    assert replay.hamming(replay.to_signed(original), original) == 0
    assert replay.distance_matrix([original, other], [reencoded]).tolist() == [
        [replay.hamming(original, reencoded)],
        [replay.hamming(other, reencoded)],
    ]


def _prints(seed: int, n: int = 8) -> list[replay.FramePrint]:
    """Hand-made fingerprints of a capture: near hashes, a swaying face, a random crop."""
    rng = np.random.default_rng(seed)
    base = int(rng.integers(0, 2**63))
    out = []
    for i in range(n):
        crop = rng.normal(0, 1, (16, 16))
        body = np.clip(np.round(crop * 48), -127, 127).astype(np.int8).tobytes()
        x, y = 250 + 3 * np.sin(i / 2 + seed), 140 + 2 * np.cos(i / 3 + seed)
        out.append(replay.FramePrint(i, base ^ (1 << i), base, body, x, y, 60.0, 0.01 * i))
    return out


def test_replay_signals() -> None:
    seen = _prints(1)
    stored = [replay.StoredCapture("job-1", "key-1", tuple(seen))]
    assert replay.replay_signals("s1", seen, frozenset(), []) == []
    by_session = replay.replay_signals("s1", _prints(2), frozenset({"s1"}), stored)
    assert [(s.code, s.severity) for s in by_session] == [("session_replayed", CERTAIN)]
    # The same frames again: a certain replay (identical crops).
    again = replay.replay_signals("s2", seen, frozenset(), stored)
    assert [(s.code, s.severity) for s in again] == [("frames_replayed", CERTAIN)]
    # The same recording moved: each frame where one rigid transform puts it, new crops noise.
    moved = [
        replace(p, x=p.x * 0.9 + 20, y=p.y * 0.9 - 5, iod=p.iod * 0.9, descriptor=other.descriptor)
        for p, other in zip(seen, _prints(3), strict=True)
    ]
    replayed = replay.replay_signals("s3", moved, frozenset(), stored)
    assert [(s.code, s.severity) for s in replayed] == [("frames_replayed", CERTAIN)]
    # The same face with its own sway: only the weak frames_similar.
    retry = [replace(p, hash=q.hash) for p, q in zip(_prints(4), seen, strict=True)]
    similar = replay.replay_signals("s4", retry, frozenset(), stored)
    assert [(s.code, s.severity) for s in similar] == [("frames_similar", WEAK)]


# --- integrity ----------------------------------------------------------------------------


def envelope(frames: int = 3, start: int = NOW_MS - 5_000, step: int = 66) -> pb.Capture:
    capture = pb.Capture(version=1, session_id="s", started_at_ms=start)
    for i in range(frames):
        capture.frames.add(image=b"x", timestamp_ms=start + i * step)
    return capture


def check(
    capture: pb.Capture, required: bool = False, secret: bytes | None = b"k"
) -> list[tuple[str, str]]:
    signals = integrity.integrity_signals(
        capture, require_signed=required, sdk_secret=secret, now_ms=NOW_MS
    )
    return [(s.code, s.severity) for s in signals]


def test_integrity_of_a_clean_capture() -> None:
    assert check(envelope()) == []
    signed = envelope()
    sign_capture(signed, b"k")
    assert check(signed, required=True) == []


def test_signature_checks() -> None:
    assert check(envelope(), required=True) == [("signature_missing", CERTAIN)]
    forged = envelope()
    sign_capture(forged, b"another key")
    assert check(forged) == [("signature_invalid", CERTAIN)]
    tampered = envelope()
    sign_capture(tampered, b"k")
    tampered.session_id = "changed"
    assert check(tampered, required=True) == [("signature_invalid", CERTAIN)]
    assert check(tampered, secret=None) == []  # nothing to verify with, nothing required


def test_timestamp_checks() -> None:
    backwards = envelope()
    backwards.frames[2].timestamp_ms = backwards.frames[0].timestamp_ms - 1
    assert ("timestamps_not_monotonic", CERTAIN) in check(backwards)
    assert check(envelope(start=NOW_MS + 3_600_000)) == [("timestamp_in_future", STRONG)]
    assert check(envelope(start=NOW_MS - 2 * 86_400_000)) == [("capture_too_old", STRONG)]
    assert check(envelope(step=61_000)) == [("timestamps_span_implausible", STRONG)]
    assert check(envelope(step=0)) == [("timestamps_flat", WEAK)]
    early = envelope()
    early.frames[0].timestamp_ms -= 10_000
    assert check(early) == [("frame_before_start", STRONG)]
    unknown = envelope(start=0)  # an SDK that sends no times is not penalised
    for frame in unknown.frames:
        frame.timestamp_ms = 0
    assert check(unknown) == []


def test_frames_and_device_checks() -> None:
    short = envelope(frames=2)
    short.challenges.append(pb.BLINK)
    assert check(short) == [("too_few_frames", CERTAIN)]
    device = envelope()
    device.device.is_emulator = True
    device.device.virtual_camera = True
    device.device.is_rooted = True
    assert check(device) == [
        ("emulator", STRONG),
        ("virtual_camera", STRONG),
        ("rooted_device", WEAK),
    ]


# --- fusion -------------------------------------------------------------------------------

CLEAN = FusionInput(has_face=True, live_proba=0.9, mask_proba=0.01, quality_score=0.9)


def test_certain_signals_score_at_least_099() -> None:
    one = fuse([Signal("signature_invalid", CERTAIN)], CLEAN)
    two = fuse([Signal("a", CERTAIN), Signal("b", CERTAIN), Signal("c", WEAK)], CLEAN)
    assert 0.99 <= one < two <= 0.999
    no_face = FusionInput(has_face=False, live_proba=0.0, mask_proba=0.0, quality_score=0.0)
    assert fuse([Signal("still_image_injected", CERTAIN)], no_face) >= 0.99


def test_strong_signals_are_hacks_below_certain() -> None:
    score = fuse([Signal("emulator", STRONG)], CLEAN)
    assert fusion.HACK_THRESHOLD <= score < 0.99
    assert fuse([Signal("emulator", STRONG), Signal("virtual_camera", STRONG)], CLEAN) > score


def test_clean_inputs_score_well_below_the_threshold() -> None:
    assert fuse([], CLEAN) < 0.2
    assert fuse([Signal("rooted_device", WEAK)], CLEAN) < 0.5


def test_the_pad_alone_never_declares_a_hack() -> None:
    worst_pad = FusionInput(has_face=True, live_proba=0.0, mask_proba=0.0, quality_score=1.0)
    assert fuse([], worst_pad) < 0.7
    everything_bad = FusionInput(has_face=True, live_proba=0.0, mask_proba=1.0, quality_score=0.0)
    weak = [Signal(f"w{i}", WEAK) for i in range(10)]
    assert fuse(weak, everything_bad) < fusion.HACK_THRESHOLD
    scores = [
        fuse([], FusionInput(has_face=True, live_proba=p, mask_proba=0.0, quality_score=0.9))
        for p in np.linspace(0, 1, 11)
    ]
    assert scores == sorted(scores, reverse=True)  # more live, lower score, continuously
    assert len(set(scores)) == 11


def test_no_face_scores_the_documented_value() -> None:
    no_face = FusionInput(has_face=False, live_proba=0.0, mask_proba=0.0, quality_score=0.0)
    assert fuse([], no_face) == fusion.NO_FACE_SCORE < fusion.HACK_THRESHOLD
