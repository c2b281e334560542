"""Model weights of the pipeline: the manifest, the converted ONNX files and their build script.

The directory ships as package data so the worker finds the files next to its installed source.
"""

from pathlib import Path

MANIFEST_NAME = "manifest.json"


def default_model_dir() -> Path:
    """Return the directory holding ``manifest.json`` and ``onnx/`` (this package's directory)."""
    return Path(__file__).resolve().parent
