"""Model stages on real images: skimage's astronaut (a real face), coffee and chelsea (none)."""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from skimage import data

from antihack.worker.pipeline.detect import FaceBox, detect_faces
from antihack.worker.pipeline.eyes import EAR_SPLIT, eye_states
from antihack.worker.pipeline.landmarks import FaceLandmarks, face_landmarks
from antihack.worker.pipeline.mask import mask_probabilities
from antihack.worker.pipeline.models import ModelSet
from antihack.worker.pipeline.pad import LIVE_THRESHOLD, live_probability, pad_scores
from tests.fixtures_images import printed

Image = npt.NDArray[np.uint8]
RecordProperty = Callable[[str, object], None]
# Measured once with this pipeline (BlazeFace short range gives x0, y0, x1, y1 ~ 178, 81, 272,
# 175); the tolerance absorbs resampling differences, not a different face.
ASTRONAUT_BOX = (178.0, 81.0, 272.0, 175.0)
BOX_TOLERANCE = 8.0
# A light-blue surgical-mask shape over the astronaut's nose, cheeks and chin (from her mesh).
MASK_POLYGON = np.array(
    [
        [180, 110],
        [181, 129],
        [186, 147],
        [197, 159],
        [207, 168],
        [221, 172],
        [237, 170],
        [248, 164],
        [260, 153],
        [268, 136],
        [270, 117],
        [224, 114],
    ],
    dtype=np.int32,
)
# Mesh points around each eye opening: lower lid corner to corner, then the upper lid back.
EYE_OPENINGS = (
    [33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246],
    [263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466],
)


@pytest.fixture(scope="module")
def models() -> ModelSet:
    return ModelSet.load(providers=["CPUExecutionProvider"])


def skimage_image(name: str) -> Image:
    """An image shipped in scikit-image's wheel (its functions are untyped)."""
    image: Image = np.asarray(getattr(data, name)(), dtype=np.uint8)
    return image


@pytest.fixture(scope="module")
def astronaut() -> Image:
    return skimage_image("astronaut")


@pytest.fixture(scope="module")
def astronaut_face(models: ModelSet, astronaut: Image) -> FaceBox:
    (faces,) = detect_faces(models, [astronaut])
    assert len(faces) == 1
    return faces[0]


@pytest.fixture(scope="module")
def astronaut_mesh(models: ModelSet, astronaut: Image, astronaut_face: FaceBox) -> FaceLandmarks:
    (mesh,) = face_landmarks(models, [astronaut], [astronaut_face])
    return mesh


def masked(image: Image) -> Image:
    """Draw a light-blue surgical-mask-like polygon with pleats and ear loops."""
    out = image.copy()
    cv2.fillPoly(out, [MASK_POLYGON], (165, 200, 225))
    for y in (128, 140, 152):
        cv2.line(out, (184, y), (266, y), (135, 170, 200), 2)
    cv2.line(out, (180, 112), (170, 100), (230, 230, 230), 2)
    cv2.line(out, (270, 119), (280, 104), (230, 230, 230), 2)
    return out


def eyes_painted_shut(image: Image, mesh: FaceLandmarks) -> Image:
    """Paint skin from just above each eye over its opening and draw a lash line."""
    out = image.copy()
    for opening in EYE_OPENINGS:
        pts = np.round(mesh.points[opening, :2]).astype(np.int32)
        top = int(pts[:, 1].min()) - 6
        skin = image[top - 3 : top, pts[:, 0].min() : pts[:, 0].max()].reshape(-1, 3).mean(0)
        cv2.fillConvexPoly(out, cv2.convexHull(pts), tuple(int(c) for c in skin))
        cv2.polylines(out, [pts[:9]], False, (60, 45, 40), 1)
    return np.asarray(cv2.GaussianBlur(out, (0, 0), 0.8)).astype(np.uint8)


def test_astronaut_has_one_face_around_her_face(astronaut_face: FaceBox) -> None:
    box = (astronaut_face.x0, astronaut_face.y0, astronaut_face.x1, astronaut_face.y1)
    assert box == pytest.approx(ASTRONAUT_BOX, abs=BOX_TOLERANCE)
    assert astronaut_face.score > 0.8
    assert len(astronaut_face.keypoints) == 6
    left_eye, right_eye, nose, mouth = astronaut_face.keypoints[:4]
    assert left_eye[0] < right_eye[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < mouth[1]
    assert astronaut_face.width == pytest.approx(astronaut_face.x1 - astronaut_face.x0)
    assert astronaut_face.center == pytest.approx(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2))


@pytest.mark.parametrize("name", ["coffee", "chelsea"])
def test_no_face_without_a_person(models: ModelSet, name: str) -> None:
    image = skimage_image(name)
    assert detect_faces(models, [image]) == [[]]


def test_detection_batch_matches_single_frames(models: ModelSet, astronaut: Image) -> None:
    frames = [astronaut, skimage_image("coffee"), np.ascontiguousarray(astronaut[:, ::-1])]
    batched = detect_faces(models, frames)
    assert batched == [detect_faces(models, [frame])[0] for frame in frames]
    # The mirrored frame's face is the same face, mirrored.
    (mirrored,) = batched[2]
    assert mirrored.x0 == pytest.approx(astronaut.shape[1] - batched[0][0].x1, abs=4)


def test_mesh_finds_the_face(astronaut_mesh: FaceLandmarks, astronaut_face: FaceBox) -> None:
    assert astronaut_mesh.face_prob > 0.5
    assert astronaut_mesh.points.shape == (468, 3)
    assert not astronaut_mesh.points.flags.writeable
    # The eye corners and nose tip lie inside the detected box.
    for index in (33, 133, 362, 263, 1):
        x, y = astronaut_mesh.points[index, :2]
        assert astronaut_face.x0 < x < astronaut_face.x1
        assert astronaut_face.y0 < y < astronaut_face.y1


def test_astronaut_eyes_are_open(
    models: ModelSet, astronaut: Image, astronaut_mesh: FaceLandmarks
) -> None:
    (state,) = eye_states(models, [astronaut], [astronaut_mesh])
    assert state.left_ear > EAR_SPLIT and state.right_ear > EAR_SPLIT
    assert state.ear == pytest.approx((state.left_ear + state.right_ear) / 2)
    assert state.open_proba > 0.9


def test_eye_stage_is_finite_and_deterministic(
    models: ModelSet,
    astronaut: Image,
    astronaut_mesh: FaceLandmarks,
    record_property: RecordProperty,
) -> None:
    shut = eyes_painted_shut(astronaut, astronaut_mesh)
    frames, meshes = [astronaut, shut], [astronaut_mesh, astronaut_mesh]
    first, second = eye_states(models, frames, meshes), eye_states(models, frames, meshes)
    assert first == second
    for state in first:
        assert all(math.isfinite(v) for v in (state.left_ear, state.right_ear, state.ear))
        assert 0.0 <= state.open_proba <= 1.0
    record_property("ear_open", first[0].ear)
    record_property("ear_painted_shut", first[1].ear)
    # Real closed eyes score 0.06-0.10; painted ones only need to read as less open.
    assert first[1].ear < first[0].ear - 0.05


def test_mask_probability(
    models: ModelSet,
    astronaut: Image,
    astronaut_face: FaceBox,
    record_property: RecordProperty,
) -> None:
    covered = masked(astronaut)
    (covered_faces,) = detect_faces(models, [covered])
    assert covered_faces, "the masked face is still detected"
    bare, with_mask = mask_probabilities(
        models, [astronaut, covered], [astronaut_face, covered_faces[0]]
    )
    record_property("p_mask_bare", bare)
    record_property("p_mask_masked", with_mask)
    assert bare < 0.1
    assert with_mask > bare


def test_pad_scores_are_recorded(
    models: ModelSet,
    astronaut: Image,
    astronaut_face: FaceBox,
    record_property: RecordProperty,
) -> None:
    # PAD outputs are recorded, not asserted good: the model is a weak, uncalibrated signal.
    variants = {
        "real": astronaut,
        "blurred": np.asarray(cv2.GaussianBlur(astronaut, (0, 0), 4), dtype=np.uint8),
        "darkened": (astronaut.astype(np.float32) * 0.25).astype(np.uint8),
        "printed": printed(astronaut),
    }
    raws = pad_scores(models, list(variants.values()), [astronaut_face] * len(variants))
    for name, raw in zip(variants, raws, strict=True):
        record_property(f"pad_raw_{name}", raw)
        assert math.isfinite(raw) and raw >= 0.0
        assert 0.0 <= live_probability(raw) <= 1.0


def test_live_probability_is_a_logistic_at_the_package_threshold() -> None:
    assert live_probability(LIVE_THRESHOLD) == pytest.approx(0.5)
    values = [live_probability(x) for x in (0.0, 0.1, 0.1826, 0.3, 1.0, 1e9)]
    assert values == sorted(values)
    assert 0.0 <= values[0] < 0.1 and values[-1] == pytest.approx(1.0)


def test_empty_inputs_give_empty_results(models: ModelSet) -> None:
    assert detect_faces(models, []) == []
    assert face_landmarks(models, [], []) == []
    assert eye_states(models, [], []) == []
    assert mask_probabilities(models, [], []) == []
    assert pad_scores(models, [], []) == []


def test_bad_frames_are_refused(
    models: ModelSet, astronaut: Image, astronaut_face: FaceBox
) -> None:
    with pytest.raises(ValueError, match="RGB uint8"):
        detect_faces(models, [astronaut.astype(np.float32)])
    with pytest.raises(ValueError, match="RGB uint8"):
        detect_faces(models, [astronaut[:, :, 0]])
    with pytest.raises(ValueError, match="boxes"):
        mask_probabilities(models, [astronaut, astronaut], [astronaut_face])
