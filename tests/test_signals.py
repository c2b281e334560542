"""Pure pipeline stages on real images and hand-made inputs: no model is loaded here."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from shared.capture import sign_capture
from shared.proto import liveness_pb2 as pb
from shared.sample import encode_jpeg
from tests.fixtures_images import astronaut, blurred, coffee, darkened, jittered, resized
from worker.pipeline import crossframe, fusion, integrity, quality, replay
from worker.pipeline.fusion import CERTAIN, STRONG, WEAK, FusionInput, Signal, fuse

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


def report_for(
    frames: list[np.ndarray], challenges: list[str] | None = None
) -> crossframe.CrossFrameReport:
    n = len(frames)
    return crossframe.crossframe_report(
        frames, challenges or [], [None] * n, [None] * n, [None] * n
    )


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


def test_blink_needs_open_then_closed_eyes() -> None:
    assert crossframe.blink_observed([0.3, 0.31, 0.08, 0.29])
    assert crossframe.blink_observed([None, 0.3, None, 0.09, 0.3])
    assert not crossframe.blink_observed([0.3, 0.31, 0.08])  # eyes never reopen
    assert not crossframe.blink_observed([0.08, 0.3, 0.3])  # closed first, never closed again
    assert not crossframe.blink_observed([0.3] * 6)
    assert not crossframe.blink_observed([0.13, 0.11])  # never clearly open


def mesh(nose: tuple[float, float] = (150, 150), lower_lip_y: float = 202) -> np.ndarray:
    """A frontal face's key FaceMesh points: eyes 100 px apart, mouth 100 px below them."""
    points = np.zeros((468, 3), dtype=np.float32)
    points[crossframe.EYE_OUTER_LEFT, :2] = (100, 100)
    points[crossframe.EYE_OUTER_RIGHT, :2] = (200, 100)
    points[crossframe.NOSE_TIP, :2] = nose
    points[crossframe.MOUTH_LEFT, :2] = (125, 200)
    points[crossframe.MOUTH_RIGHT, :2] = (175, 200)
    points[crossframe.UPPER_LIP, :2] = (150, 198)
    points[crossframe.LOWER_LIP, :2] = (150, lower_lip_y)
    return points


def test_pose_measures_of_a_frontal_face() -> None:
    pose = crossframe.pose_measures(mesh())
    assert pose.yaw == pytest.approx(0.0)
    assert pose.pitch == pytest.approx(0.5)
    assert pose.mouth_ratio == pytest.approx(4 / 50)


@pytest.mark.parametrize(
    ("challenge", "performed", "still"),
    [
        ("YAW", [mesh(), mesh((165, 150)), mesh((180, 150))], [mesh(), mesh((155, 150))]),
        ("NOD", [mesh(), mesh((150, 160)), mesh((150, 170))], [mesh(), mesh((150, 154))]),
        ("MOUTH", [mesh(), mesh(lower_lip_y=230)], [mesh(), mesh(lower_lip_y=206)]),
    ],
)
def test_head_and_mouth_challenges(
    challenge: str, performed: list[np.ndarray], still: list[np.ndarray]
) -> None:
    def run(meshes: list[np.ndarray]) -> crossframe.CrossFrameReport:
        frames = jittered(resized(astronaut(), 64), len(meshes))
        n = len(meshes)
        return crossframe.crossframe_report(frames, [challenge], [None] * n, [None] * n, meshes)

    assert run(performed).observed == {challenge: True}
    assert run(performed).signals == ()
    failed = run(still)
    assert failed.observed == {challenge: False}
    assert [(s.code, s.severity) for s in failed.signals] == [("challenge_not_met", CERTAIN)]


def test_challenges_are_judged_on_their_marked_frames() -> None:
    frames = jittered(resized(astronaut(), 64), 4)
    ears: list[float | None] = [0.3, 0.08, 0.3, 0.3]
    meshes: list[np.ndarray | None] = [mesh(), mesh(), mesh((180, 150)), mesh()]
    # The blink happened during the YAW step, not the BLINK step: BLINK is not met.
    steps: list[str | None] = ["YAW", "YAW", "BLINK", "BLINK"]
    report = crossframe.crossframe_report(frames, ["BLINK", "YAW"], steps, ears, meshes)
    assert report.observed == {"BLINK": False, "YAW": False}
    unmarked = crossframe.crossframe_report(frames, ["BLINK", "YAW"], [None] * 4, ears, meshes)
    assert unmarked.observed == {"BLINK": True, "YAW": True}


# --- replay -------------------------------------------------------------------------------


def decode(data: bytes) -> np.ndarray:
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), 1), cv2.COLOR_BGR2RGB)


def test_phash_distances() -> None:
    original = replay.phash(astronaut())
    assert 0 <= original < 2**64
    reencoded = replay.phash(decode(encode_jpeg(astronaut(), 60)))
    other = replay.phash(coffee())
    assert replay.hamming(original, reencoded) <= 2
    assert replay.hamming(original, other) > 20
    # Hashes stored as signed 64-bit integers compare the same.
    signed = original - 2**64 if original >= 2**63 else original
    assert replay.hamming(signed, original) == 0
    assert replay.min_distances([original, other], [reencoded, signed]) == [
        0,
        replay.hamming(other, original),
    ]
    assert replay.min_distances([original], []) == [64]


def test_replay_signals() -> None:
    frame = replay.phash(astronaut())
    assert replay.replay_signals("s1", [frame], frozenset(), ()) == []
    seen_session = replay.replay_signals("s1", [frame], frozenset({"s1"}), ())
    assert [(s.code, s.severity) for s in seen_session] == [("session_replayed", CERTAIN)]
    seen_frame = replay.replay_signals("s2", [frame], frozenset({"s1"}), (frame ^ 0b11,))
    assert [(s.code, s.severity) for s in seen_frame] == [("frames_replayed", CERTAIN)]
    # Three bits away is beyond the default distance of 2: not the same picture.
    assert replay.replay_signals("s2", [frame], frozenset(), (frame ^ 0b111,)) == []
    # Half the frames or more seen before: a replay. Fewer: a genuine retry can do that.
    others = [0x0F0F_0F0F_0F0F_0F0F, 0x00FF_00FF_00FF_00FF, 0x3333_3333_3333_3333]
    half = replay.replay_signals("s3", [frame, frame ^ 1, *others[:2]], frozenset(), (frame,))
    assert [(s.code, s.severity) for s in half] == [("frames_replayed", CERTAIN)]
    one = replay.replay_signals("s3", [frame, *others], frozenset(), (frame,))
    assert [(s.code, s.severity) for s in one] == [("frames_similar", WEAK)]
    # An empty session id means "none", never a match.
    assert replay.replay_signals("", [], frozenset({""}), ()) == []


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
