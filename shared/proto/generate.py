"""Regenerate the Python bindings of ``proto/liveness.proto``:
``python -m antihack.shared.proto.generate``.

Needs ``grpcio-tools`` (a dev dependency). The output is committed; a test regenerates it into a
temporary folder and compares bytes, so the bindings cannot drift from the ``.proto``.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = REPO_ROOT / "proto"
BINDINGS_DIR = Path(__file__).resolve().parent
PROTO_NAME = "liveness.proto"
# The import path protoc records, so the classes' __module__ is the real, importable module.
VIRTUAL_DIR = "shared/proto"
OUTPUTS = ("liveness_pb2.py", "liveness_pb2.pyi")

# Oldest protobuf runtime the bindings support (pyproject: protobuf>=5.28). protoc stamps its own
# version into the gencode and older runtimes refuse newer stamps, although this file only uses
# AddSerializedFile and the builder, both present since 5.28 (a test imports it under 5.28.0).
RUNTIME_FLOOR = (5, 28, 0)
_VERSION_CHECK = re.compile(
    r"(_runtime_version\.ValidateProtobufRuntimeVersion\(\s*_runtime_version\.Domain\.PUBLIC,\s*)"
    r"(\d+),(\s*)(\d+),(\s*)(\d+),"
)


def lower_version_stamp(source: str, floor: tuple[int, int, int] = RUNTIME_FLOOR) -> str:
    """Replace protoc's gencode version stamp by ``floor`` when protoc's is newer."""
    match = _VERSION_CHECK.search(source)
    if match is None:
        # A protoc whose output we do not recognise: stop rather than commit an unchecked stamp.
        raise RuntimeError("protoc output has no recognisable ValidateProtobufRuntimeVersion call")
    stamped = (int(match.group(2)), int(match.group(4)), int(match.group(6)))
    if stamped <= floor:
        return source
    major, minor, patch = floor
    replacement = f"{match.group(1)}{major},{match.group(3)}{minor},{match.group(5)}{patch},"
    return source[: match.start()] + replacement + source[match.end() :]


def generate(out_dir: Path) -> list[Path]:
    """Write the bindings into ``out_dir`` and return their paths."""
    from grpc_tools import protoc  # dev dependency, imported only when generating

    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"--proto_path={VIRTUAL_DIR}={PROTO_DIR}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"{VIRTUAL_DIR}/{PROTO_NAME}",
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {PROTO_DIR / PROTO_NAME}")
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for name in OUTPUTS:
            text = (Path(tmp) / VIRTUAL_DIR / name).read_text(encoding="utf-8")
            if name.endswith(".py"):
                text = lower_version_stamp(text)
            target = out_dir / name
            target.write_text(text, encoding="utf-8")
            written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=BINDINGS_DIR, help="output folder")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
