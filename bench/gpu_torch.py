"""The pipeline's ONNX models run by PyTorch (``onnx2torch``) on a GPU: ms/image by batch size.

Bench-only (not part of ``make bench``): a GPU worker runs these graphs with onnxruntime-gpu,
which the lent GPU machines cannot install, while they do have PyTorch with CUDA. This script
converts the same committed ONNX files with ``onnx2torch``, checks that each converted model
gives onnxruntime's (CPU) outputs on real crops, then times it by batch size. Without CUDA it
runs on the CPU, which is how it is checked on a developer machine.

    pip install torch onnx onnx2torch          # or carry their wheels to the GPU machine
    python bench/gpu_torch.py [--batches 1,4,16,32,64] [--runs 20] [--half] [--device cuda]

onnx2torch imports torchvision for two converters (NonMaxSuppression, RoiAlign; none of these
models uses them); where torchvision does not import, a stand-in module lets onnx2torch load.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    sys.path[0] = str(ROOT)

from antihack.shared.domain.capture import CaptureLimits, decode_frames, parse_capture  # noqa: E402
from antihack.worker.pipeline.models import MODEL_NAMES, ModelSet, read_manifest  # noqa: E402
from bench.bench_models import model_inputs  # noqa: E402


def sample_frame() -> np.ndarray:
    """The first frame of the committed sample capture (a real face; no skimage needed)."""
    payload = (ROOT / "samples" / "astronaut.pb").read_bytes()
    return decode_frames(parse_capture(payload, CaptureLimits()), CaptureLimits())[0]


def import_onnx2torch() -> Any:
    try:
        import torchvision  # noqa: F401
    except Exception:  # noqa: BLE001 - any failure: torchvision is optional here
        stub = types.ModuleType("torchvision")
        ops = types.ModuleType("torchvision.ops")

        def unavailable(*_: object, **__: object) -> None:
            raise RuntimeError("torchvision is not available: this operator cannot run")

        for op in ("nms", "batched_nms", "roi_align"):
            setattr(ops, op, unavailable)
        stub.ops = ops  # type: ignore[attr-defined]
        sys.modules["torchvision"] = stub
        sys.modules["torchvision.ops"] = ops
    import onnx2torch

    return onnx2torch


def explicit_padding(path: Path) -> Any:
    """The ONNX model with ``auto_pad=SAME_*`` (tflite2onnx writes it; onnx2torch refuses it)
    rewritten as explicit ``pads``, from the spatial sizes shape inference gives."""
    import onnx
    from onnx import helper, shape_inference

    model = shape_inference.infer_shapes(onnx.load(str(path)))
    graph = model.graph
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in [*graph.input, *graph.value_info, *graph.output]
    }
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        mode = attrs.get("auto_pad", b"NOTSET")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if mode not in ("SAME_UPPER", "SAME_LOWER"):
            continue
        spatial = shapes[node.input[0]][2:]
        if node.op_type == "Conv":
            weight = next(i for i in graph.initializer if i.name == node.input[1])
            kernel = list(weight.dims[2:])
        else:
            kernel = list(attrs["kernel_shape"])
        strides = list(attrs.get("strides", [1] * len(kernel)))
        dilations = list(attrs.get("dilations", [1] * len(kernel)))
        begin, end = [], []
        for size, k, st, dil in zip(spatial, kernel, strides, dilations, strict=True):
            total = max((-(-size // st) - 1) * st + (k - 1) * dil + 1 - size, 0)
            small, large = total // 2, total - total // 2
            begin.append(small if mode == "SAME_UPPER" else large)
            end.append(large if mode == "SAME_UPPER" else small)
        kept = [a for a in node.attribute if a.name not in ("auto_pad", "pads")]
        del node.attribute[:]
        node.attribute.extend([*kept, helper.make_attribute("pads", begin + end)])
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", default="1,4,16,32,64")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--device", default="", help="cuda or cpu (default: cuda if present)")
    parser.add_argument("--half", action="store_true", help="also time float16 on the GPU")
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",") if b.strip()]

    import torch

    onnx2torch = import_onnx2torch()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"torch {torch.__version__}, device {device} ({name}), {args.runs} runs per size")

    models = ModelSet.load()  # onnxruntime on the CPU: the reference outputs and the crops
    inputs = model_inputs(models, sample_frame())
    files = {m.name: m.path for m in read_manifest()}

    def synced() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def time_ms(module: Any, batch: Any) -> float:
        with torch.inference_mode():
            module(batch)  # warm-up (cuDNN picks its algorithms for this shape here)
            synced()
            times = []
            for _ in range(args.runs):
                start = time.perf_counter()
                module(batch)
                synced()
                times.append((time.perf_counter() - start) * 1000)
        return statistics.median(times)

    header = "".join(f"{'b=' + str(b):>9s}" for b in batches)
    print(f"\nms per image by batch size (median of {args.runs}); max|d| vs onnxruntime CPU")
    print(f"{'model':16s} {'dtype':7s}{header}   max|d|")
    for model_name in MODEL_NAMES:
        try:
            module = onnx2torch.convert(explicit_padding(files[model_name])).eval().to(device)
        except Exception as exc:  # noqa: BLE001 - report and go on with the other models
            print(f"{model_name:16s} not converted: {type(exc).__name__}: {exc}")
            continue
        single = inputs[model_name]
        session = getattr(models, model_name)
        want = session.run(None, {session.get_inputs()[0].name: single})
        with torch.inference_mode():
            got = module(torch.from_numpy(single).to(device))
        got = got if isinstance(got, list | tuple) else [got]
        diff = max(
            float(np.abs(g.float().cpu().numpy() - w).max()) for g, w in zip(got, want, strict=True)
        )
        dtypes = [torch.float32] + ([torch.float16] if args.half and device.type == "cuda" else [])
        for dtype in dtypes:
            module = module.to(dtype)  # float16 last: .to() converts the module in place
            cells = []
            for b in batches:
                batch = torch.from_numpy(np.repeat(single, b, axis=0)).to(device, dtype)
                cells.append(f"{time_ms(module, batch) / b:9.3f}")
            label = str(dtype).removeprefix("torch.")
            print(f"{model_name:16s} {label:7s}{''.join(cells)}   {diff:.2e}")


if __name__ == "__main__":
    main()
