"""Replay memory (issue 13): a capture sent again, changed by any ordinary edit, is a certain hack
through any key; the same person trying again with new frames is not.

Genuine captures come from tests/genuine.py (the astronaut animated through her landmarks,
with head sway, blinks and camera noise; ``still=True`` is a person sitting very still).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray
from sqlalchemy import select

from antihack.shared.domain.capture import CaptureLimits, parse_capture
from antihack.shared.infra.db import transaction
from antihack.shared.infra.tables import JobResult, ReplayBand
from antihack.shared.sdk.sample import build_capture
from antihack.worker.pipeline.fusion import CERTAIN, HACK_THRESHOLD, WEAK
from antihack.worker.pipeline.replay import (
    BANDS,
    FramePrint,
    MemoryHistory,
    band_keys,
    frame_print,
    hamming,
    pack_prints,
    replay_signals,
    unpack_prints,
)
from antihack.worker.pipeline.run import Analysis, Pipeline, PipelineContext, _Timer
from antihack.worker.replay_index import DbHistory, replay_rows
from tests.conftest import Key
from tests.genuine import genuine_capture, genuine_frames
from tests.helpers import new_jobs, submit
from tests.transforms import rescale, rotate

Image = NDArray[np.uint8]
ORIGINAL_SEED, STILL_SEED = 1301, 1302  # seeds no other test uses
PARTNER_A, PARTNER_B = "partner-a", "partner-b"


def _jpeg(quality: int) -> Callable[[Image], Image]:
    def encode(image: Image) -> Image:
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        assert ok
        return np.asarray(cv2.imdecode(data, cv2.IMREAD_UNCHANGED), dtype=np.uint8)

    return encode


def _levels(brightness: float, contrast: float) -> Callable[[Image], Image]:
    def adjust(image: Image) -> Image:
        f = (image.astype(np.float32) - 128) * contrast + 128 + brightness * 255
        return np.asarray(np.clip(f, 0, 255), dtype=np.uint8)

    return adjust


def _colour(image: Image) -> Image:
    f = image.astype(np.float32) * np.array([1.15, 1.0, 0.85]) + np.array([0, 10, -5])
    return np.asarray(np.clip(f, 0, 255), dtype=np.uint8)


def _crop(image: Image) -> Image:
    # The face box is about 120 x 170 px at (175, 60): cut 10% of it off its left and top.
    return np.ascontiguousarray(image[77:, 187:])


def _crop_other_side(image: Image) -> Image:
    return np.ascontiguousarray(image[:213, :283])


TRANSFORMS: dict[str, Callable[[Image], Image]] = {
    "mirror": lambda image: np.ascontiguousarray(image[:, ::-1]),
    "rotate +10": rotate(10),
    "rotate -10": rotate(-10),
    "scale 0.8": rescale(0.8),
    "scale 1.25": rescale(1.25),
    "crop 10% left/top": _crop,
    "crop 10% right/bottom": _crop_other_side,
    "jpeg q30": _jpeg(30),
    "brightness +20%": _levels(0.2, 1.0),
    "brightness -20%": _levels(-0.2, 1.0),
    "contrast +20%": _levels(0.0, 1.2),
    "contrast -20%": _levels(0.0, 0.8),
    "colour shift": _colour,
    "mirror+rotate+scale+jpeg": lambda image: _jpeg(30)(
        rotate(7)(rescale(0.85)(np.ascontiguousarray(image[:, ::-1])))
    ),
}


def _facemesh_prints(pipeline: Pipeline, frames: list[Image]) -> list[FramePrint]:
    """Fingerprints placed by each frame's own FaceMesh points: what version 1 stored."""
    faces = pipeline._faces(frames, _Timer())
    return [
        frame_print(i, frame, mark.points)
        for i, (frame, mark) in enumerate(zip(frames, faces.marks, strict=True))
        if mark is not None
    ]


def analyse(pipeline: Pipeline, frames: list[Image], history: Any) -> Analysis:
    capture = parse_capture(build_capture(frames), CaptureLimits())
    return pipeline.analyze(capture, PipelineContext.fresh(history=history))


def certain_replay(
    prints: list[FramePrint], history: MemoryHistory, key_id: str | None
) -> list[tuple[str, str]]:
    found = replay_signals("", prints, frozenset(), history.scoped(key_id).lookup(prints))
    return [(s.code, s.severity) for s in found]


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    return Pipeline.load()


@pytest.fixture(scope="module")
def originals() -> dict[bool, list[Image]]:
    """Two genuine captures: a person moving naturally, and one sitting very still."""
    return {False: genuine_frames(ORIGINAL_SEED), True: genuine_frames(STILL_SEED, still=True)}


@pytest.fixture(scope="module")
def history(pipeline: Pipeline, originals: dict[bool, list[Image]]) -> MemoryHistory:
    """Both genuine captures, submitted through partner A."""
    memory = MemoryHistory()
    for still, frames in originals.items():
        analysis = analyse(pipeline, frames, memory)
        # The second is the same face as the first: at most frames_similar.
        assert analysis.score < HACK_THRESHOLD, analysis.signals
        assert set(analysis.reasons) <= {"frames_similar"}, analysis.signals
        memory.add(f"original-{still}", PARTNER_A, analysis.frame_prints)
    return memory


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_a_transformed_replay_is_a_certain_hack_through_any_key(
    pipeline: Pipeline, originals: dict[bool, list[Image]], history: MemoryHistory, name: str
) -> None:
    frames = [TRANSFORMS[name](f) for f in originals[False]]
    # Sent through partner B with the default scope (deployment): compared with A's captures.
    analysis = analyse(pipeline, frames, history.scoped(None))
    assert analysis.score >= 0.99, analysis.signals
    assert "frames_replayed" in analysis.reasons
    print(next(s.detail for s in analysis.signals if s.code == "frames_replayed"))
    # Through partner A itself (scope key): a replay too.
    assert ("frames_replayed", CERTAIN) in certain_replay(analysis.frame_prints, history, PARTNER_A)
    # Scope key, partner B: A's captures are not B's history.
    assert certain_replay(analysis.frame_prints, history, PARTNER_B) == []


STILL_TRANSFORMS = [
    "mirror",
    "rotate -10",
    "scale 0.8",
    "crop 10% left/top",
    "jpeg q30",
    "mirror+rotate+scale+jpeg",
]


@pytest.mark.parametrize("name", STILL_TRANSFORMS)
def test_a_transformed_replay_of_a_very_still_person_is_a_certain_hack(
    pipeline: Pipeline, originals: dict[bool, list[Image]], history: MemoryHistory, name: str
) -> None:
    """A person who barely moved (sway ~0.007 inter-ocular distances, under FaceMesh's jitter):
    registered across frames, that sway is still the recording's own, and a transformed replay
    keeps it under one rigid relation."""
    frames = [TRANSFORMS[name](f) for f in originals[True]]
    analysis = analyse(pipeline, frames, history.scoped(None))
    assert analysis.score >= 0.99, analysis.signals
    assert "frames_replayed" in analysis.reasons
    detail = next(s.detail for s in analysis.signals if s.code == "frames_replayed")
    print(detail)
    assert "earlier capture" in detail


@pytest.mark.parametrize(
    "seed,still",
    [(1311, True), (1312, True), (1313, True), (1314, False), (1315, False)],
    ids=["still-1", "still-2", "still-3", "moving-1", "moving-2"],
)
def test_a_genuine_retry_is_not_a_certain_replay(
    pipeline: Pipeline, history: MemoryHistory, seed: int, still: bool
) -> None:
    """The same person again, a moment later (new frames, same place, same light): at most the
    weak frames_similar, never a certain hack."""
    analysis = analyse(pipeline, genuine_frames(seed, still=still), history.scoped(PARTNER_A))
    assert "frames_replayed" not in analysis.reasons, analysis.signals
    assert analysis.score < HACK_THRESHOLD
    similar = [s for s in analysis.signals if s.code == "frames_similar"]
    assert all(s.severity == WEAK for s in similar)
    print([s.detail for s in similar])


def test_a_capture_sent_again_unchanged_is_a_replay_even_when_short(
    pipeline: Pipeline, originals: dict[bool, list[Image]], history: MemoryHistory
) -> None:
    """Three frames are too few to compare motion; identical frames are enough. (Three frames
    of a very still person are also too few for the natural-motion check to be sure: at most
    its weak still_image_suspected.)"""
    analysis = analyse(pipeline, originals[True][5:8], history.scoped(None))
    assert "frames_replayed" in analysis.reasons and analysis.score >= 0.99
    assert set(analysis.reasons) <= {"frames_replayed", "still_image_suspected"}
    assert all(s.severity == WEAK for s in analysis.signals if s.code == "still_image_suspected")


def test_prints_pack_and_bands_find_near_hashes() -> None:
    prints = [
        FramePrint(i, (0xF0F0_1234_5678_9ABC * (i + 1)) & (2**64 - 1), 0, bytes(256), i, 2.0, 60)
        for i in range(3)
    ]
    fields = [(p.index, p.hash, p.descriptor, p.x, p.y, p.iod, p.registered) for p in prints]
    # Version 1 (FaceMesh placements): bare records, as stored before registration.
    old = pack_prints(prints)
    assert len(old) == 3 * 282
    assert [
        (p.index, p.hash, p.descriptor, p.x, p.y, p.iod, p.registered) for p in unpack_prints(old)
    ] == fields
    # Version 2 (registered placements): a leading version byte, read back as registered.
    registered = [replace(p, registered=True) for p in prints]
    new = pack_prints(registered)
    assert new[0] == 2 and len(new) == 3 * 282 + 1
    assert all(p.registered for p in unpack_prints(new))
    assert [p.x for p in unpack_prints(new)] == [p.x for p in prints]
    # Up to 3 differing bits leave at least one of the 4 bands intact (pigeonhole).
    value = prints[0].hash
    near = value ^ (1 << 3) ^ (1 << 20) ^ (1 << 40)
    assert hamming(value, near) == 3
    assert len(set(band_keys(value)) & set(band_keys(near))) == BANDS - 3


def test_fingerprints_stored_before_registration_still_catch_a_replay(
    pipeline: Pipeline, originals: dict[bool, list[Image]]
) -> None:
    """A capture remembered as a version-1 blob (FaceMesh placements) is judged by the legacy
    thresholds: a transformed replay of a moving person is still caught, a still retry is not."""
    legacy = _facemesh_prints(pipeline, originals[False])
    stored = unpack_prints(pack_prints(legacy))
    assert not any(p.registered for p in stored)
    memory = MemoryHistory()
    memory.add("old", PARTNER_A, stored)
    replay = analyse(pipeline, [TRANSFORMS["rotate +10"](f) for f in originals[False]], memory)
    assert "frames_replayed" in replay.reasons and replay.score >= 0.99, replay.signals
    retry = analyse(pipeline, genuine_frames(1316, still=True), memory)
    assert "frames_replayed" not in retry.reasons and retry.score < HACK_THRESHOLD


def test_frames_of_different_sizes_keep_facemesh_placements(pipeline: Pipeline) -> None:
    """One crop window cannot register frames of different sizes: their fingerprints keep the
    FaceMesh placements (the legacy thresholds), and the capture is analysed, never a 500."""
    frames = genuine_frames(1317)
    frames = [f if i % 2 else TRANSFORMS["scale 0.8"](f) for i, f in enumerate(frames)]
    analysis = analyse(pipeline, frames, MemoryHistory())
    assert analysis.frame_prints and not any(p.registered for p in analysis.frame_prints)
    same = analyse(pipeline, genuine_frames(1317), MemoryHistory())
    assert all(p.registered for p in same.frame_prints)


def test_the_database_index_finds_replays_per_scope(
    pipeline: Pipeline,
    originals: dict[bool, list[Image]],
    sessions: Any,
    make_key: Callable[..., Key],
) -> None:
    a, b = make_key(), make_key()
    job_a = new_jobs(sessions, a.api_id)[0]
    job_b = new_jobs(sessions, b.api_id)[0]
    original = analyse(pipeline, originals[False], MemoryHistory())
    with transaction(sessions) as session:
        session.add_all(replay_rows(job_a, a.api_id, original.frame_prints))
    with transaction(sessions) as session:
        bands = session.scalars(select(ReplayBand.band).where(ReplayBand.job_id == job_a)).all()
    assert 0 < len(bands) <= BANDS * len(original.frame_prints)
    mirrored = [TRANSFORMS["mirror+rotate+scale+jpeg"](f) for f in originals[False]]
    deployment = DbHistory(sessions, None, job_b)
    replay = analyse(pipeline, mirrored, deployment)
    assert "frames_replayed" in replay.reasons and replay.score >= 0.99
    # The test database is shared by the whole run: other tests' captures of the same face may
    # be candidates too in the deployment scope; the keys made here hold only this test's jobs.
    assert job_a in [c.capture_id for c in deployment.lookup(replay.frame_prints)]
    assert DbHistory(sessions, b.api_id, job_b).lookup(replay.frame_prints) == []
    scoped = DbHistory(sessions, a.api_id, job_b).lookup(replay.frame_prints)
    assert [(c.capture_id, c.key_id) for c in scoped] == [(job_a, a.api_id)]
    # The job being judged is never its own history.
    assert DbHistory(sessions, a.api_id, job_a).lookup(original.frame_prints) == []
    ids = [c.capture_id for c in DbHistory(sessions, None, job_a).lookup(original.frame_prints)]
    assert job_a not in ids


def test_replay_through_another_partner_end_to_end(
    base_settings: Any,
    start_worker: Any,
    start_api: Any,
    make_key: Callable[..., Key],
    sessions: Any,
) -> None:
    """Real API, worker and database, default scope: partner B replays (mirrored, re-encoded)
    a capture partner A submitted; a still retry of the same person through B passes."""
    start_worker(base_settings.replace(replay_scope="deployment"))
    base = start_api()
    a, b = make_key(), make_key()
    seed = 1321
    first = genuine_capture(seed).SerializeToString()
    replayed = build_capture(
        [TRANSFORMS["mirror+rotate+scale+jpeg"](f) for f in genuine_frames(seed)]
    )
    retry = genuine_capture(1322, still=True).SerializeToString()
    results = {}
    for name, key, payload in (("first", a, first), ("replay", b, replayed), ("retry", b, retry)):
        resp = submit(base, key, payload, path="/face/liveness_anti_hack")
        assert resp.status_code == 200, resp.text
        with transaction(sessions) as session:
            result = session.get(JobResult, resp.json()["request_id"])
            assert result is not None
            results[name] = (resp.json()["score"], list(result.reasons))
    print(results)
    assert results["first"][0] < HACK_THRESHOLD and "frames_replayed" not in results["first"][1]
    assert results["replay"][0] >= 0.99 and "frames_replayed" in results["replay"][1]
    assert results["retry"][0] < HACK_THRESHOLD and "frames_replayed" not in results["retry"][1]
